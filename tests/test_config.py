"""Configuration: config.yaml, profiles, --set overrides and their one-line errors."""

from __future__ import annotations

import pytest

from bot.app import check_engines
from bot.config import DEFAULT_CONFIG_PATH, ENGINE_KINDS, load_settings
from pipeline.engines.registry import create_engine, engine_class
from pipeline.errors import ConfigError


def test_the_shipped_config_parses_for_every_profile():
    assert DEFAULT_CONFIG_PATH.is_file()
    for profile in ("offline", "cpu", "gpu"):
        settings = load_settings(DEFAULT_CONFIG_PATH, profile=profile)
        assert settings.profile == profile
        for kind in ENGINE_KINDS:
            assert settings.engine(kind).engine
    offline = load_settings(DEFAULT_CONFIG_PATH)
    assert offline.profile == "offline"
    assert (offline.asr.engine, offline.mt.engine, offline.tts.engine) == ("pocketsphinx", "apertium", "espeak")
    check_engines(offline)  # every offline engine resolves to an importable class


def test_overrides_apply_to_the_chosen_profile_and_parse_as_yaml():
    s = load_settings(
        DEFAULT_CONFIG_PATH,
        profile="gpu",
        overrides=["asr.model=/models/en.nemo", "vad.min_silence_ms=400", "languages.listeners=[es, fr]",
                   "tts.options.rate=180", "pipeline.warn_slower_than_realtime=false"],
    )
    assert s.asr.engine == "nemo" and s.asr.model == "/models/en.nemo"
    assert s.vad.min_silence_ms == 400
    assert s.languages.listeners == ["es", "fr"]
    assert s.tts.options == {"rate": 180}
    assert s.pipeline.warn_slower_than_realtime is False


def test_the_spoken_language_may_be_auto():
    s = load_settings(DEFAULT_CONFIG_PATH, overrides=["languages.speaker=Auto", "languages.identification.candidates=[en-US, ES]"])
    assert s.languages.speaker == "auto"
    assert s.languages.identification.candidates == ["en", "es"]
    from bot.app import language_id_params

    params = language_id_params(s)
    assert params.candidates == ("en", "es") and params.threshold == s.languages.identification.threshold


def test_a_config_file_can_override_engine_sections(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text() + "\nasr:\n  options: {pool_size: 1}\n")
    s = load_settings(path)
    assert s.asr.engine == "pocketsphinx" and s.asr.options == {"pool_size": 1}


@pytest.mark.parametrize(
    ("overrides", "profile", "message"),
    [
        (["asr.foo=1"], None, "asr.foo: unknown key"),
        (["bogus.key=1"], None, "unknown key 'bogus'"),
        (["vad.threshold=2"], None, "vad.threshold: Input should be less than 1"),
        (["vad.min_silence_ms=-5"], None, "vad.min_silence_ms"),
        (["languages.speaker=english"], None, "'english' is not an ISO 639-1 language code"),
        (["languages.identification.fallback=xx"], None, "languages.identification.fallback: 'xx'"),
        (["languages.identification.threshold=0"], None, "languages.identification.threshold"),
        (["server.port=http"], None, "server.port"),
        (["no-equals-sign"], None, "expected section.key=value"),
        (["vad.threshold.deep=1"], None, "vad.threshold is a value, not a section"),
        ([], "tpu", "unknown profile 'tpu' (choose from: cpu, gpu, offline)"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(overrides, profile, message):
    with pytest.raises(ConfigError) as info:
        load_settings(DEFAULT_CONFIG_PATH, profile=profile, overrides=overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_broken_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: offline\nprofiles: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(scalar)
    typo = tmp_path / "typo.yaml"
    typo.write_text(DEFAULT_CONFIG_PATH.read_text().replace("    mt: {engine: apertium}", "    mt: {engin: apertium}"))
    with pytest.raises(ConfigError, match="profiles.offline.mt.engin: unknown key"):
        load_settings(typo)


def test_unknown_engines():
    s = load_settings(DEFAULT_CONFIG_PATH, overrides=["mt.engine=google"])
    with pytest.raises(ConfigError, match="mt.engine: unknown engine 'google' \\(choose from: apertium, nllb\\)"):
        check_engines(s)
    for profile in ("cpu", "gpu"):  # every engine of every profile resolves to its class
        check_engines(load_settings(DEFAULT_CONFIG_PATH, profile=profile))


def test_engine_options_are_checked_against_the_constructor():
    with pytest.raises(ConfigError, match="engine 'apertium' has no option 'beam'"):
        create_engine("mt", "apertium", options={"beam": 4})
    with pytest.raises(ConfigError, match="has no option 'model'"):
        create_engine("mt", "apertium", model="x")
    engine = create_engine("tts", "espeak", options={"rate": 200})
    assert type(engine) is engine_class("tts", "espeak")

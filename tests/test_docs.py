"""The documentation matches the code: every setting is explained, every command in the
README runs as written after the README's set-up, the captions JSON is described as it is."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel

from bot.cli import _parser
from bot.config import ENGINE_KINDS, Settings
from pipeline.file_mode import FileTranslation, write_outputs
from pipeline.frames import InterpretationResult, Utterance

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
CONFIG_TEXT = (REPO / "config.yaml").read_text(encoding="utf-8")
CONFIG = yaml.safe_load(CONFIG_TEXT)


def setting_paths() -> list[tuple[str, ...]]:
    """Every key ``polyvox config`` prints, as (section, key) or (key,)."""
    paths: list[tuple[str, ...]] = []
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += [(name, key) for key in kind.model_fields]
        else:
            paths.append((name,))
    return paths


def documented(path: tuple[str, ...]) -> bool:
    text = README + CONFIG_TEXT
    if len(path) == 1:
        return path[0] in CONFIG or f"`{path[0]}`" in README
    section, key = path
    if section in ENGINE_KINDS:
        # The engine sections share their keys: set in a profile, or shown for any of them.
        in_profiles = any(key in (body or {}).get(kind, {}) for body in CONFIG["profiles"].values() for kind in ENGINE_KINDS)
        return in_profiles or any(f"{kind}.{key}" in text for kind in ENGINE_KINDS)
    return key in (CONFIG.get(section) or {}) or f"{section}.{key}" in text


def test_every_setting_is_documented_in_config_yaml_or_the_readme():
    paths = setting_paths()
    assert len(paths) > 60  # the walk found the sections
    missing = [".".join(p) for p in paths if not documented(p)]
    assert missing == [], f"undocumented settings: {missing} (comment them in config.yaml or explain them in README.md)"


def test_the_check_itself_notices_an_undocumented_key():
    assert not documented(("webrtc", "no_such_setting")) and not documented(("asr", "no_such_setting"))
    assert documented(("webrtc", "telephony")) and documented(("asr", "device"))


def readme_commands() -> list[list[str]]:
    """Shell commands in the README's fenced bash blocks (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words = words[1:]  # VAR=value prefixes
            if words:
                commands.append(words)
    return commands


def test_readme_commands_work_as_written_after_the_set_up():
    commands = readme_commands()
    polyvox = [c for c in commands if c[0].endswith("polyvox")]
    assert len(polyvox) >= 6
    for words in commands:
        assert words[0] != "polyvox", f"{shlex.join(words)}: after the set-up it is .venv/bin/polyvox"
        if words[0] == ".venv/bin/polyvox":
            _parser().parse_args(words[1:])  # a usage error exits: the command is wrong
        elif words[0] == ".venv/bin/python":
            target = words[1] if words[1] != "-m" else None
            if target is not None:
                assert (REPO / target).is_file(), f"{shlex.join(words)}: no {target}"
            for arg in words[2:]:
                if arg.startswith("tests/"):
                    assert (REPO / arg).exists(), f"{shlex.join(words)}: no {arg}"
        else:
            # Other tools the deployment sections use (a Ray cluster, Kubernetes, a proxy).
            assert words[0] in {"bash", "export", "source", "ray", "kubectl", "nginx", "docker"}, (
                f"unexpected command in the README: {shlex.join(words)}"
            )
            if words[0] == "bash":
                assert (REPO / words[1]).is_file()


def test_every_key_of_the_captions_json_is_in_the_readme(tmp_path):
    utterance = Utterance(user_id="alice", language="en", start=0.5, end=1.5)
    result = FileTranslation(
        utterances=[InterpretationResult(utterance, "hello", {"es": "hola"})],
        audio={utterance.id: {"es": np.zeros(160, np.int16)}},
        captions=[{"utterance_id": utterance.id, "user_id": "alice", "language": "en", "text": "hello",
                   "translations": {"es": "hola"}, "final": True, "at": 1.6}],
        dropped=[InterpretationResult(Utterance("bob", "en", 2.0, 2.5), dropped=("asr", "nothing heard"))],
    )
    document = write_outputs(result, "es", tmp_path / "o.wav", tmp_path / "o.json")
    section = README[README.index("## Interpret a recording"):README.index("## WebRTC rooms")]
    keys = set(document) | set(document["utterances"][0]) | set(document["captions"][0]) | set(document["dropped"][0])
    missing = sorted(k for k in keys if f"`{k}`" not in section and f"`{k}/" not in section and f"/`{k}`" not in section)
    assert missing == [], f"captions JSON keys the README does not describe: {missing}"

"""Guild settings in SQLite, the voice store stand-in and the ``discord:`` config section."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from bot.discord_bot import DiscordSettings
from bot.guild_settings import GuildSettingsStore
from bot.voice_store import SQLiteVoiceStore, VoiceStore
from tests.fakes import silence, tone


def test_a_guild_that_chose_nothing_gets_the_default_languages_and_no_captions(tmp_path):
    store = GuildSettingsStore(tmp_path / "s.sqlite3", default_languages=["en", "es"])
    settings = store.guild(1)
    assert (settings.guild_id, settings.languages, settings.captions_channel_id) == (1, ["en", "es"], None)


def test_everything_survives_reopening_the_file(tmp_path):
    path = tmp_path / "nested" / "s.sqlite3"
    store = GuildSettingsStore(path)
    assert store.set_languages(1, ["es", "en", "es"]) == ["es", "en"]
    store.set_captions_channel(1, 42)
    store.set_languages(2, ["fr"])
    store.set_member_language(1, 7, "es")
    store.set_member_language(2, 7, "fr")
    store.set_voice_opt_out(7, True)
    store.close()

    again = GuildSettingsStore(path)
    assert again.guild(1).languages == ["es", "en"] and again.guild(1).captions_channel_id == 42
    assert again.guild(2).languages == ["fr"] and again.guild(2).captions_channel_id is None
    assert again.member_language(1, 7) == "es" and again.member_language(2, 7) == "fr"
    assert again.member_language(1, 8) is None
    assert again.voice_opted_out(7) and not again.voice_opted_out(8)


def test_changing_one_setting_keeps_the_others(tmp_path):
    store = GuildSettingsStore(tmp_path / "s.sqlite3")
    store.set_captions_channel(1, 42)
    store.set_languages(1, ["en", "fr"])
    assert store.guild(1).captions_channel_id == 42
    store.set_captions_channel(1, None)
    assert store.guild(1).languages == ["en", "fr"] and store.guild(1).captions_channel_id is None


def test_opting_back_in_and_forgetting_a_user(tmp_path):
    store = GuildSettingsStore(tmp_path / "s.sqlite3")
    store.set_voice_opt_out(7, True)
    store.set_voice_opt_out(7, True)  # twice is fine
    store.set_voice_opt_out(7, False)
    assert not store.voice_opted_out(7)
    store.set_member_language(1, 7, "es")
    store.set_member_language(2, 7, "en")
    assert store.forget_user(7) == 2
    assert store.member_language(1, 7) is None


def test_the_default_voice_store_keeps_enrollments_and_deletes_them(tmp_path):
    store = SQLiteVoiceStore(tmp_path / "v.sqlite3")
    assert isinstance(store, VoiceStore)
    speech = np.concatenate([tone(220, 4.0), tone(330, 2.0)])
    summary = store.enroll(7, speech)
    assert summary.startswith("6.0 s of speech stored")
    assert store.status(7).startswith("enrolled with 6.0 s of speech on ")
    assert store.profile(7) is None  # no cloning without the XTTS store
    store.close()
    again = SQLiteVoiceStore(tmp_path / "v.sqlite3")
    assert again.status(7) is not None
    assert again.forget(7) == 1 and again.forget(7) == 0
    assert again.status(7) is None


def test_the_default_voice_store_refuses_too_little_or_silent_speech():
    store = SQLiteVoiceStore()
    with pytest.raises(ValueError, match="at least 3 s"):
        store.enroll(7, tone(220, 2.0))
    with pytest.raises(ValueError, match="silent"):
        store.enroll(7, silence(5.0))
    assert store.status(7) is None


def test_discord_settings_defaults_and_validation():
    settings = DiscordSettings()
    assert settings.database_path().is_absolute()
    assert DiscordSettings(room_languages=["EN", " es"]).room_languages == ["en", "es"]
    with pytest.raises(ValidationError, match="not an ISO 639-1"):
        DiscordSettings(room_languages=["english"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        DiscordSettings(token="secret")  # the token only comes from the environment
    with pytest.raises(ValidationError):
        DiscordSettings(enroll_seconds=1)

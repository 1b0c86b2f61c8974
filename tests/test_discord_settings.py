"""Guild settings in SQLite, the move of old opt-outs to the voice store, and the ``discord:`` section."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import ValidationError

from bot.discord_bot import DiscordSettings
from bot.guild_settings import GuildSettingsStore


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
    store.close()

    again = GuildSettingsStore(path)
    assert again.guild(1).languages == ["es", "en"] and again.guild(1).captions_channel_id == 42
    assert again.guild(2).languages == ["fr"] and again.guild(2).captions_channel_id is None
    assert again.member_language(1, 7) == "es" and again.member_language(2, 7) == "fr"
    assert again.member_language(1, 8) is None


def test_changing_one_setting_keeps_the_others(tmp_path):
    store = GuildSettingsStore(tmp_path / "s.sqlite3")
    store.set_captions_channel(1, 42)
    store.set_languages(1, ["en", "fr"])
    assert store.guild(1).captions_channel_id == 42
    store.set_captions_channel(1, None)
    assert store.guild(1).languages == ["en", "fr"] and store.guild(1).captions_channel_id is None


def test_forgetting_a_user(tmp_path):
    store = GuildSettingsStore(tmp_path / "s.sqlite3")
    store.set_member_language(1, 7, "es")
    store.set_member_language(2, 7, "en")
    assert store.forget_user(7) == 2
    assert store.member_language(1, 7) is None


def test_opt_outs_an_older_version_kept_here_are_handed_over_once(tmp_path):
    path = tmp_path / "s.sqlite3"
    GuildSettingsStore(path).close()
    with sqlite3.connect(path) as db:  # what an older polyvox wrote
        db.executemany("INSERT INTO voice_opt_outs (user_id) VALUES (?)", [(7,), (9,)])
    store = GuildSettingsStore(path)
    assert sorted(store.take_legacy_opt_outs()) == [7, 9]
    assert store.take_legacy_opt_outs() == []


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

"""The ``engines:`` section of ``config.yaml``: where the model stages run.

``backend: local`` (the default) loads every engine in the room server's own process.
``backend: ray`` leaves VAD and denoising local (per participant, cheap) and reaches ASR,
MT and TTS on a Ray Serve application that ``polyvox engines serve`` deployed; the
per-stage sections here size those deployments (replicas, autoscaling, GPU fractions,
cross-room batching).

Kept apart from ``bot/config.py`` (which mounts it) so the settings read as one unit.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["REMOTE_STAGES", "AutoscalingSettings", "EnginesSettings", "StageDeploymentSettings"]

#: The stages that run on Ray Serve with ``backend: ray`` (VAD and denoise stay local).
REMOTE_STAGES = ("asr", "mt", "tts")

_APP_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AutoscalingSettings(_Strict):
    """Ray Serve autoscaling of one stage: replicas follow the requests in flight.

    Attributes:
        min_replicas: Fewest replicas (0 lets an idle stage release its GPU; the first
            request then waits for a replica to start and load its model).
        max_replicas: Most replicas.
        target_ongoing_requests: Requests in flight per replica Serve aims for.
    """

    min_replicas: int = Field(1, ge=0, le=1024)
    max_replicas: int = Field(4, ge=1, le=1024)
    target_ongoing_requests: float = Field(4.0, gt=0.0, le=1000.0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class StageDeploymentSettings(_Strict):
    """One model stage (ASR, MT or TTS) as a Ray Serve deployment.

    Attributes:
        num_replicas: Replicas of the stage, each with its own copy of the model.
        autoscaling: Scale between ``min_replicas`` and ``max_replicas`` instead of a
            fixed ``num_replicas``.
        num_cpus: CPUs Ray reserves per replica (logical: it decides placement).
        num_gpus: GPUs per replica; a fraction packs several replicas on one GPU
            (``0.25``: four per GPU). README: "Engines on a Ray cluster" has the
            memory each model needs.
        max_ongoing_requests: Requests one replica works on at once; more wait in the
            room servers' routers. At least ``max_batch_size`` for batches to fill.
        max_batch_size: Requests from any room merged into one engine call
            (``@serve.batch``; ASR and MT; TTS streams each request on its own).
        batch_wait_timeout_s: Longest the first request of a batch waits for more.
    """

    num_replicas: int = Field(1, ge=1, le=1024)
    autoscaling: AutoscalingSettings | None = None
    num_cpus: float = Field(1.0, ge=0.0, le=1024.0)
    num_gpus: float = Field(0.0, ge=0.0, le=64.0)
    max_ongoing_requests: int = Field(16, ge=1, le=10000)
    max_batch_size: int = Field(8, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)


class EnginesSettings(_Strict):
    """Where the model stages run (see the module docstring).

    Attributes:
        backend: ``local`` (this process) or ``ray`` (a Ray Serve application).
        address: The Ray cluster: ``auto`` (the cluster this machine is a node of:
            ``ray start --address=HEAD:6379`` first), ``HOST:PORT`` (the head's GCS
            port, from a Ray node) or ``ray://HOST:10001`` (Ray Client, from anywhere;
            TTS then arrives per sentence batch instead of streamed, a Ray Client
            limit). ``None``: ``auto`` for room servers; ``polyvox engines serve``
            starts a Ray instance of its own.
        app_name: Name of the Serve application; room servers find it by this name,
            so several engine apps (profiles) can share one cluster.
        connect_timeout_s: How long connecting to the cluster and finding the
            application may take at start-up before it is one clear error.
        call_timeout_s: Safety net for one remote call (the stages' own deadlines,
            ``pipeline.engine_timeout_*``, are normally shorter).
        asr: The ASR deployment.
        mt: The MT deployment.
        tts: The TTS deployment.
    """

    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    app_name: str = "polyvox"
    connect_timeout_s: float = Field(20.0, gt=0.0, le=600.0)
    call_timeout_s: float = Field(120.0, gt=0.0, le=3600.0)
    asr: StageDeploymentSettings = StageDeploymentSettings()
    mt: StageDeploymentSettings = StageDeploymentSettings()
    tts: StageDeploymentSettings = StageDeploymentSettings()

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not _APP_NAME.match(value):
            raise ValueError("use 1-63 letters, digits, '-' or '_'")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value == "auto":
            return value
        rest = value.removeprefix("ray://")
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected auto, HOST:PORT or ray://HOST:PORT")
        return value

    def stage(self, kind: str) -> StageDeploymentSettings:
        """The deployment settings of ``kind`` (one of :data:`REMOTE_STAGES`)."""
        return getattr(self, kind)

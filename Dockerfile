# syntax=docker/dockerfile:1
#
# polyvox: CUDA runtime image for the gpu profile.
#
#   docker build -t polyvox .
#   docker run --gpus all -p 8080:8080 -v polyvox-data:/data polyvox
#
# Not built in this repository's CI (its machines have no Docker engine): check
# changes here with a local `docker build`.

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 (the project pins 3.11; Ubuntu 22.04 ships 3.10, so from the
# deadsnakes PPA) and the system packages the engines call:
#   ffmpeg            decoding any input format (pydub)
#   espeak-ng         offline TTS
#   apertium-eng-spa  offline MT, English <-> Spanish
#   libopus0          Opus codec for Discord / WebRTC audio
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv \
        ffmpeg espeak-ng apertium-eng-spa libopus0 \
    && apt-get purge -y --auto-remove gpg-agent software-properties-common \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Only what the package needs, so a local .venv or data folder never lands in the image.
COPY pyproject.toml README.md config.yaml ./
COPY bot ./bot
COPY transports ./transports
COPY pipeline ./pipeline
COPY voices ./voices

# Every engine (the offline ones as a fallback, and the gpu profile's NeMo, NLLB-200 and
# XTTS v2 on torch's CUDA build), the WebRTC room server, the Discord bot, and Ray Serve
# (the same image runs `polyvox engines serve` and every Ray node: README, engines on Ray).
RUN pip install --upgrade pip \
    && pip install ".[offline,gpu,webrtc,discord,ray]"

# Models downloaded from the Hugging Face hub, and voice profiles, live on the volume.
ENV HF_HOME=/data/hf
RUN useradd --create-home --uid 10001 --user-group polyvox \
    && mkdir -p /data/hf \
    && chown -R polyvox:polyvox /data
VOLUME /data
USER polyvox

EXPOSE 8080
ENTRYPOINT ["polyvox"]
# config.yaml listens on 127.0.0.1, which cannot be reached through a published port;
# on 0.0.0.0 joining needs room tokens: pass -e POLYVOX_ROOM_SECRET=... (and
# -e DISCORD_TOKEN=... for the bot). Fetch weights first into the volume:
#   docker run --rm -v polyvox-data:/data polyvox models pull --profile gpu
CMD ["serve", "--profile", "gpu", "--set", "server.host=0.0.0.0"]

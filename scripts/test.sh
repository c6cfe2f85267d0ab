#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs the whole suite.
#   scripts/test.sh [pytest args...]
# Uses ./.venv (created if missing; installs requirements*.txt and the project itself, editable). As root it also installs Debian's Chromium (browser tests),
# starts a PostgreSQL server on loopback so the database tests run on SQLite AND PostgreSQL, and
# starts a one-node Slurm cluster for the job-launch tests (scripts/test-slurm.sh).
# CFTCLIP_SKIP_APT=1 skips all three; CFTCLIP_TEST_DATABASE_URLS=url1,url2 names databases yourself,
# SLURM_CONF=path names a running Slurm cluster yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# requirements-paper.txt (spaCy) lets the spaCy tagger tests run on a pipeline built in the test; the real
# en_core_web_trf, bert-base-uncased and CLIP ViT-L/14 are not installed here (their tests skip, saying why).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-test.txt \
  -r requirements-paper.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .  # the packages, importable from anywhere

if [ "${CFTCLIP_SKIP_APT:-0}" != "1" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: Chromium is missing and cannot be installed here (needs root and apt-get); browser tests will be skipped" >&2
  fi
fi

if [ -z "${CFTCLIP_TEST_DATABASE_URLS:-}" ] && [ "${CFTCLIP_SKIP_APT:-0}" != "1" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    CFTCLIP_TEST_DATABASE_URLS=$(scripts/test-postgres.sh)
    export CFTCLIP_TEST_DATABASE_URLS
  else
    echo "note: no PostgreSQL server for the tests (needs root and apt-get); database tests run on SQLite only" >&2
  fi
fi

if [ -z "${SLURM_CONF:-}" ] && [ "${CFTCLIP_SKIP_APT:-0}" != "1" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    SLURM_CONF=$(scripts/test-slurm.sh)
    export SLURM_CONF
  else
    echo "note: no Slurm cluster for the tests (needs root and apt-get); the Slurm job tests are skipped" >&2
  fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"

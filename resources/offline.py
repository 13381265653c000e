"""Offline and privacy defaults for the libraries under tuneforge.

Called by the engines right before they import a library that would otherwise phone home
(telemetry, usage statistics, public-suffix-list downloads). Values a user has already set win.
Nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os

OPT_OUTS = {
    # great-expectations usage statistics
    "GX_ANALYTICS_ENABLED": "False",
    # deepeval telemetry (import and evaluate() otherwise call out)
    "DEEPEVAL_TELEMETRY_OPT_OUT": "YES",
    # dagster telemetry for processes that have no instance yaml (dagster.yaml also disables it)
    "DAGSTER_DISABLE_TELEMETRY": "1",
    # tldextract (used by Presidio's URL recognizer) downloads the public suffix list otherwise
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    # Hugging Face libraries: no telemetry
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


# Loggers that report, as a warning, a download tuneforge never wants: bitsandbytes' CPU backend (on CPUs with
# AVX512-BF16) tries to fetch a 4-bit kernel from the Hugging Face hub through the `kernels` package and warns when it
# cannot; its own kernel is used instead, which is what an offline machine must do.
QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops",)


def apply_offline_defaults() -> None:
    """Set telemetry opt-outs for this process unless the user chose otherwise; quiet the hub-download warnings."""
    for key, value in OPT_OUTS.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)

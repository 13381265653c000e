"""Configuration checks that name the field: at definition load, when a run starts, and on demand.

Three moments, one rule (every message reads `Resource.field = value: reason`):

- **definition load** (the code location, `dagster definitions validate`, the UI): the shape of literal
  values -- a URL without a scheme, a port out of range, an object-store URL whose fsspec backend is not
  installed. These are pydantic validators (`mode="before"`), so a value given as `EnvVar(...)` is checked
  after it is resolved instead: nothing is read from the environment at import time.
- **run start**: `CheckedResource.setup_for_execution` checks the configuration against the world -- files
  that must exist and parse, servers that must answer, a base model that must be resolvable offline --
  when Dagster initialises the resource, before the body of any asset that uses it runs.
- **on demand**: `tuneforge check` initialises every resource exactly as a run would (EnvVars resolved) and
  prints every problem at once, before anything is launched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dagster import ConfigurableResource, EnvVar


class ConfigurationError(ValueError):
    """A resource's configuration cannot work; the message names each field and the reason."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def problem(resource_or_name: Any, field: str, value: Any, reason: str) -> str:
    name = resource_or_name if isinstance(resource_or_name, str) else type(resource_or_name).__name__
    return f"{name}.{field} = {value!r}: {reason}"


class CheckedResource(ConfigurableResource):
    """A resource that checks its configuration against the world before it is used (see module doc)."""

    def problems(self) -> list[str]:
        """What is wrong with this configuration here and now; [] when it can work."""
        return []

    def setup_for_execution(self, context) -> None:
        found = self.problems()
        if found:
            raise ConfigurationError(found)


# -- shape checks used by field validators (mode="before": EnvVars pass through, checked once resolved) ---
def check_http_url(owner: str, field: str, value: Any) -> Any:
    if value is None or isinstance(value, EnvVar):
        return value
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem(owner, field, value, "expected an http(s) URL such as http://host:8000"))
    try:
        parts.port
    except ValueError:
        raise ValueError(problem(owner, field, value, "the port is not a number in 1..65535")) from None
    return value


def check_port(owner: str, field: str, value: Any) -> Any:
    if isinstance(value, int) and not 1 <= value <= 65535:
        raise ValueError(problem(owner, field, value, "a port must lie in 1..65535"))
    return value


def check_fsspec_url(owner: str, field: str, value: Any) -> Any:
    """The URL's protocol has an installed fsspec backend (s3:// needs s3fs, gs:// needs gcsfs)."""
    if value is None or isinstance(value, EnvVar):
        return value
    import fsspec
    from fsspec.core import split_protocol

    protocol = split_protocol(str(value))[0]
    if protocol is None:
        raise ValueError(problem(owner, field, value, "expected a URL with a scheme, e.g. s3://bucket/prefix or file:///srv/artifacts"))
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise ValueError(problem(owner, field, value, f"fsspec knows no {protocol!r} protocol")) from None
    except ImportError as err:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol)
        hint = f": pip install 'tuneforge[{extra}]'" if extra else ""
        raise ValueError(problem(owner, field, value, f"{err}{hint}")) from None
    return value


# -- on demand ------------------------------------------------------------------------------------------
def check_resources(resources: dict[str, Any]) -> dict[str, list[str]]:
    """Initialise each resource as a run would (EnvVars resolved, validators and set-up run) and collect
    what fails, by resource key. Resources that are not ConfigurableResources are passed over."""
    report: dict[str, list[str]] = {}
    for key, resource in sorted(resources.items()):
        if not isinstance(resource, ConfigurableResource):
            continue
        try:
            resource.process_config_and_initialize()
        except Exception as err:
            report[key] = _messages(err)
        else:
            report[key] = []
    return report


def _messages(err: Exception) -> list[str]:
    """One line per problem: ours as written, pydantic's and Dagster's config errors without their noise."""
    from dagster import DagsterInvalidConfigError
    from pydantic import ValidationError

    if isinstance(err, ConfigurationError):
        return err.problems
    if isinstance(err, ValidationError):  # a resolved EnvVar that fails its field's validator
        return [e["msg"].removeprefix("Value error, ") for e in err.errors()]
    if isinstance(err, DagsterInvalidConfigError):  # e.g. an EnvVar that is not set
        return [e.message for e in err.errors]
    return [f"{type(err).__name__}: {err}"]

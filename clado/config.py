"""Every setting in one place, read from a TOML file; each field documents its default."""

from __future__ import annotations

import difflib
import re
import tomllib
import warnings
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clado.agents.facets import SCHEMAS
from clado.agents.hierarchy import HierarchySettings
from clado.agents.namer import NamingSettings
from clado.backends.embed import EmbedSettings
from clado.backends.llm import LLMSettings
from clado.moved_settings import MOVED, MovedSettingConflict, MovedSettingWarning, move_settings
from clado.pipeline.aspects import AspectSettings
from clado.pipeline.cluster import ClusterSettings
from clado.pipeline.ingest import IngestSettings
from clado.pipeline.refresh_settings import RefreshSettings
from clado.pipeline.route import RoutingSettings
from clado.prompts import has_template
from clado.redact import without_secrets
from clado.serve.settings import ServeSettings
from clado.taxonomy.privacy import PrivacySettings
from clado.taxonomy.records import FacetSpec, sha256_text, stable_json


class FacetSettings(BaseModel):
    """Which questions are asked of each record."""

    model_config = ConfigDict(extra="forbid")
    set: Literal["auto", "reviews", "conversations", "support", "raw"] = Field(
        "auto",
        description="Built-in facet set; auto = conversations for chat records, reviews for texts; raw = cluster the "
        "records' own texts (no extraction; the LLM still names clusters and builds the hierarchy)",
    )
    custom: list[FacetSpec] = Field(default_factory=list, description="Facets declared here replace the built-in set")
    max_failed_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of records whose extraction may fail; above it the build stops (exit code 4) after "
        "writing errors.json",
    )


class OutputSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("clado taxonomy", description="Title of the HTML and Markdown reports")
    examples_per_node: int = Field(20, description="Example items embedded per node in the HTML")
    site_min_items: int = Field(
        50_000, ge=1, description="From this many items on, the HTML's examples go into per-topic files in "
        "taxonomy_files/ beside it, loaded when a topic is opened, so the page opens fast",
    )  # fmt: skip
    map: bool = Field(True, description="Compute the 2-D map of items (UMAP) for the HTML and map.png")
    map_max_items: int = Field(
        20000, ge=3, description="The 2-D map shows a fixed random sample of at most this many items (UMAP's cost)"
    )


class Config(BaseModel):
    """The whole configuration of a build; `clado config` prints it with defaults."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(
        0,
        ge=0,
        description="Seed for every random choice: the kNN index, UMAP, Leiden and its sampled search, the lexical "
        "sample, naming and hierarchy shuffles, the LLM's sampling seed and the 2-D map",
    )
    prompts_dir: str | None = Field(None, description="Directory of *.j2 files overriding built-in prompts")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    facets: FacetSettings = Field(default_factory=FacetSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    aspects: AspectSettings = Field(default_factory=AspectSettings)
    naming: NamingSettings = Field(default_factory=NamingSettings)
    hierarchy: HierarchySettings = Field(default_factory=HierarchySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @model_validator(mode="after")
    def _check_custom_facets(self) -> Config:
        """Each custom facet names a known answer schema and an existing prompt template."""
        for i, spec in enumerate(self.facets.custom):
            where = f"facets.custom[{i}] ({spec.name!r})"
            if spec.schema_name not in SCHEMAS:
                raise ValueError(f"{where}: unknown schema_name {spec.schema_name!r}; known: {', '.join(SCHEMAS)}")
            if not has_template(spec.prompt, self.prompts_dir):
                places = "clado/prompts" + (f" or prompts_dir {self.prompts_dir}" if self.prompts_dir else "")
                raise ValueError(f"{where}: prompt {spec.prompt!r} not found (no {spec.prompt}.j2 in {places})")
        return self

    @classmethod
    def load(cls, path: Path | str | None) -> Config:
        """Read a TOML file (None = all defaults); errors name the file, the offending key and its line.

        A setting under its old key (see clado.moved_settings) still reads, with a MovedSettingWarning."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = tomllib.loads(text)
            data, moves = move_settings(data)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, MovedSettingConflict) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for move in moves:
            warnings.warn(f"{path}: {move}; the old key is deprecated", MovedSettingWarning, stacklevel=2)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_problems(exc, text)}") from None

    def with_overrides(self, **overrides: object) -> Config:
        """A copy with settings replaced by dotted keys (`llm.base_url=...`); None values are ignored."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            *sections, key = dotted.split(".")
            target = data
            for section in sections:
                target = target[section]
            target[key] = value
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"command line: {_problems(exc)}") from None

    def stored(self) -> dict[str, Any]:
        """The settings as a store records them: everything but the secrets (API keys, tokens)."""
        return without_secrets(Config, self.model_dump(mode="json"))

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Config:
        """A recorded config, secrets dropped and moved keys in their new place (older stores hold both)."""
        data, _ = move_settings(data, prefer_new=True)
        return cls.model_validate(without_secrets(cls, data))

    def fingerprint(self) -> str:
        """Hash of every setting that changes the result (not the secrets)."""
        return sha256_text(stable_json(self.stored()))


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate."""


def _problems(exc: ValidationError, text: str = "") -> str:
    """The validation errors as `section.key (line N): message`, one entry a key (a union's alternatives joined);
    an unknown key names its section and the nearest known name."""
    by_key: dict[tuple[str, ...], list[str]] = {}
    for error in exc.errors():
        path, model = _key_path(error["loc"])
        if error["type"] == "extra_forbidden" and model is not None:
            table = f"[{'.'.join(path[:-1])}]" if len(path) > 1 else "the top level"
            near = difflib.get_close_matches(path[-1], list(model.model_fields), n=1)
            message = f"unknown key in {table}" + (f"; did you mean {near[0]!r}?" if near else "")
        else:
            message = error["msg"]
        by_key.setdefault(path, []).append(message)
    return "; ".join(_where(path, text) + ", or ".join(messages) for path, messages in by_key.items())


def _key_path(loc: tuple[Any, ...]) -> tuple[tuple[str, ...], type[BaseModel] | None]:
    """The settings keys along a validation error's location (list indices and union tags left out); with the
    section model when the last key is not one of its settings."""
    path: list[str] = []
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:  # a union's tag after a scalar setting
            break
        if part not in model.model_fields:
            return (*path, str(part)), model
        path.append(part)
        annotation = model.model_fields[part].annotation
        model = next((t for t in (annotation, *get_args(annotation)) if _is_section(t)), None)
    return tuple(path), None


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _where(path: tuple[str, ...], text: str) -> str:
    if not path:
        return ""
    keys = [list(path)] + [old.split(".") for old, new in MOVED.items() if new == ".".join(path)]
    line = next(filter(None, (_line_of(text, key) for key in keys)), None)
    return ".".join(path) + (f" (line {line})" if line else "") + ": "


def _line_of(text: str, path: list[str]) -> int | None:
    """The line (1-based) that sets dotted key `path`, written under its table header or as a dotted key."""
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            table = [part.strip().strip("\"'") for part in header.group(1).split(".")]
            continue
        key = re.match(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=", line)
        if key and table + [part.strip().strip("\"'") for part in key.group(1).split(".")] == path:
            return number
    return None


def defaults_toml() -> str:
    """The default configuration as commented TOML."""
    lines = ["# clado configuration: every setting with its default.", ""]
    lines += _section_lines(Config(), prefix="")
    return "\n".join(lines) + "\n"


def _section_lines(model: BaseModel, *, prefix: str) -> list[str]:
    scalars, sections = [], []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            about = [f"# {(type(value).__doc__ or '').splitlines()[0]}"] if type(value).__doc__ else []
            sections += ["", f"[{prefix}{name}]", *about] + _section_lines(value, prefix=f"{prefix}{name}.")
            continue
        if field.description:
            scalars.append(f"# {field.description}{_range(field.metadata)}")
        scalars.append(f"{name} = {_toml_value(value)}" if value is not None else f"# {name} =  (unset)")
    return scalars + sections


def _range(metadata: list[Any]) -> str:
    """A field's declared bounds as ` (>= 1, <= 1000)`, or nothing."""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [f"{sign} {getattr(m, key)}" for m in metadata for key, sign in signs.items() if hasattr(m, key)]
    return f" ({', '.join(bounds)})" if bounds else ""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return stable_json(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v.model_dump() if isinstance(v, BaseModel) else v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return stable_json(value)

"""Every setting in one place, read from a TOML file; each field documents its default."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clado.agents.facets import SCHEMAS
from clado.agents.hierarchy import HierarchySettings
from clado.agents.namer import NamingSettings
from clado.backends.embed import EmbedSettings
from clado.backends.llm import LLMSettings
from clado.pipeline.cluster import ClusterSettings
from clado.pipeline.ingest import IngestSettings
from clado.pipeline.route import RoutingSettings
from clado.prompts import has_template
from clado.redact import without_secrets
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
    seed: int = Field(0, description="Seed for every random choice")
    prompts_dir: str | None = Field(None, description="Directory of *.j2 files overriding built-in prompts")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    facets: FacetSettings = Field(default_factory=FacetSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    naming: NamingSettings = Field(default_factory=NamingSettings)
    hierarchy: HierarchySettings = Field(default_factory=HierarchySettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    output: OutputSettings = Field(default_factory=OutputSettings)

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
        """Read a TOML file (None = all defaults); errors name the file and the offending key."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {_problems(exc)}") from None

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
        """A recorded config, secrets dropped (older stores hold them); keys come from the environment again."""
        return cls.model_validate(without_secrets(cls, data))

    def fingerprint(self) -> str:
        """Hash of every setting that changes the result (not the secrets)."""
        return sha256_text(stable_json(self.stored()))


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate."""


def _problems(exc: ValidationError) -> str:
    """Each validation error as `section.key: message`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors())


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
            sections += ["", f"[{prefix}{name}]"] + _section_lines(value, prefix=f"{prefix}{name}.")
            continue
        if field.description:
            scalars.append(f"# {field.description}")
        scalars.append(f"{name} = {_toml_value(value)}" if value is not None else f"# {name} =  (unset)")
    return scalars + sections


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

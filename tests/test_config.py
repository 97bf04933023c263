"""The TOML config: defaults printed as TOML read back to the same config; errors name the file and key."""

import tomllib
import warnings
from typing import get_args

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from clado.config import Config, ConfigError, defaults_toml
from clado.moved_settings import MovedSettingWarning
from clado.pipeline.cluster import ClusterSettings

SECTIONS = ("graph", "resolution", "hdbscan", "refine", "rerank")


def test_printed_defaults_read_back_as_the_defaults(tmp_path):
    text = defaults_toml()
    path = tmp_path / "clado.toml"
    path.write_text(text)
    assert Config.load(path) == Config()
    assert "[llm]" in text and "[cluster]" in text and "# " in text
    tomllib.loads(text)


def test_settings_are_read(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 7\n[llm]\nbase_url = "http://gpu:8000/v1"\nmodel = "m"\n[embed]\ndims = 128\n')
    config = Config.load(path)
    assert config.seed == 7 and config.llm.base_url == "http://gpu:8000/v1" and config.embed.dims == 128


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cluster]\nmethodd = 'leiden'\n")
    with pytest.raises(ConfigError, match=r"c\.toml: cluster\.methodd"):
        Config.load(path)


def test_invalid_toml_names_the_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 1\nseed = = 2\n")
    with pytest.raises(ConfigError, match=r"c\.toml: .*line 2"):
        Config.load(path)


def test_fingerprint_ignores_the_api_key_but_not_settings():
    a, b = Config(), Config()
    b.llm.api_key = "secret"
    assert a.fingerprint() == b.fingerprint()
    b.seed = 3
    assert a.fingerprint() != b.fingerprint()


def test_dotted_overrides_replace_settings_and_skip_none():
    config = Config().with_overrides(**{"llm.base_url": "http://x/v1", "llm.model": None, "seed": 5})
    assert config.llm.base_url == "http://x/v1" and config.llm.model is None and config.seed == 5


def custom_facet_toml(path, *, prompt="facet_tone", schema="intent", prompts_dir=None):
    """A config file declaring one custom facet "tone"."""
    head = f"prompts_dir = {str(prompts_dir)!r}\n" if prompts_dir else ""
    path.write_text(
        f'{head}[[facets.custom]]\nname = "tone"\nquestion = "How does the customer sound?"\n'
        f'prompt = "{prompt}"\nschema_name = "{schema}"\ncluster_on = false\n'
    )
    return path


def test_a_custom_facet_with_its_own_prompt_is_read(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "facet_tone.j2").write_text("{{ question }}\n<data>\n{{ text }}\n</data>\n")
    config = Config.load(custom_facet_toml(tmp_path / "c.toml", prompts_dir=prompts))
    [spec] = config.facets.custom
    assert (spec.name, spec.prompt, spec.schema_name, spec.cluster_on) == ("tone", "facet_tone", "intent", False)
    built_in = Config.load(custom_facet_toml(tmp_path / "b.toml", prompt="facet_intent"))
    assert built_in.facets.custom[0].prompt == "facet_intent"


@pytest.mark.parametrize(
    "prompt, schema, bad",
    [("facet_intent", "tone_answer", "schema_name 'tone_answer'"), ("facet_tone", "intent", "prompt 'facet_tone'")],
)
def test_a_custom_facet_with_an_unknown_schema_or_prompt_is_refused_at_load(tmp_path, prompt, schema, bad):
    """The error names the file, the facet and the bad value (a prompt only in another folder is not found)."""
    path = custom_facet_toml(tmp_path / "c.toml", prompt=prompt, schema=schema, prompts_dir=tmp_path)
    with pytest.raises(ConfigError, match=rf"c\.toml: .*facets\.custom\[0\] \('tone'\): (unknown )?{bad}"):
        Config.load(path)
    with pytest.raises(ValueError, match=bad):
        Config().with_overrides(
            **{"facets.custom": [{"name": "tone", "question": "q", "prompt": prompt, "schema_name": schema}]}
        )


def test_neighbourhood_size_is_auto_or_an_int_from_10_to_40(tmp_path):
    path = tmp_path / "c.toml"
    assert Config().hierarchy.neighbourhood_size == "auto" and 'neighbourhood_size = "auto"' in defaults_toml()
    for value, expected in (('"auto"', "auto"), ("15", 15)):
        path.write_text(f"[hierarchy]\nneighbourhood_size = {value}\n")
        assert Config.load(path).hierarchy.neighbourhood_size == expected
    for value in ("9", "41", '"big"'):
        path.write_text(f"[hierarchy]\nneighbourhood_size = {value}\n")
        with pytest.raises(ConfigError, match=r"c\.toml: hierarchy\.neighbourhood_size"):
            Config.load(path)


def section_paths(model=Config, prefix=()):
    """Every settings section of the config as a dotted path (nested ones included)."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield (*prefix, name)
            yield from section_paths(field.annotation, (*prefix, name))


@pytest.mark.parametrize("section", [".".join(p) for p in section_paths()])
def test_every_section_refuses_an_unknown_key_naming_file_line_and_section(tmp_path, section):
    path = tmp_path / "c.toml"
    path.write_text(f"seed = 1\n[{section}]\nno_such_setting = 1\n")
    with pytest.raises(
        ConfigError, match=rf"c\.toml: {section}\.no_such_setting \(line 3\): unknown key in \[{section}\]"
    ):
        Config.load(path)


def test_a_misspelt_key_is_refused_with_the_near_name(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[ingest]\ntext_feild = "body"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: ingest\.text_feild \(line 2\): .*did you mean 'text_field'\?"):
        Config.load(path)
    path.write_text("sed = 3\n")
    with pytest.raises(
        ConfigError, match=r"c\.toml: sed \(line 1\): unknown key in the top level; did you mean 'seed'"
    ):
        Config.load(path)


def test_refresh_and_serve_are_sections_printed_by_clado_config(tmp_path):
    text = defaults_toml()
    assert "[refresh]\n" in text and "[serve]\n" in text and "min_new_cluster_size = 5" in text
    path = tmp_path / "c.toml"
    path.write_text("[refresh]\nassign_threshold = 0.7\n[serve]\nmax_batch = 9\n")
    config = Config.load(path)
    assert config.refresh.assign_threshold == 0.7 and config.serve.max_batch == 9


def test_every_setting_is_printed_once_with_its_description():
    """`clado config` prints each leaf setting of every section under its section header, a comment above it."""
    text = defaults_toml()
    lines = text.splitlines()
    for section in [(), *section_paths()]:
        model = Config
        for name in section:
            model = model.model_fields[name].annotation
        header = f"[{'.'.join(section)}]" if section else None
        start = lines.index(header) + 1 if header else 0
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        body = lines[start:end]
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue
            [at] = [i for i, line in enumerate(body) if line.split(" =")[0].lstrip("# ") == name]
            assert field.description is None or body[at - 1].startswith(f"# {field.description}"), (section, name)
    assert "# Neighbours per item in the kNN graph that Leiden partitions (>= 1, <= 1000)\nknn_k = 20\n" in text


BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def is_number(annotation) -> bool:
    """Whether a field's type admits an int or a float (bool aside), also inside unions and Annotated."""
    args = get_args(annotation)
    return any(map(is_number, args)) if args else annotation in (int, float)


def bounds_of(annotation, metadata) -> list:
    found = [m for m in metadata if isinstance(m, BOUNDS)]
    for arg in get_args(annotation):
        found += bounds_of(arg, arg.metadata if isinstance(arg, FieldInfo) else [arg])
    return found


def test_numeric_cluster_settings_declare_their_ranges():
    sections = [ClusterSettings, *(ClusterSettings.model_fields[s].annotation for s in SECTIONS)]
    numeric = [(m.__name__, n, f) for m in sections for n, f in m.model_fields.items() if is_number(f.annotation)]
    assert len(numeric) >= 30  # the check sees the numeric fields inside unions and Annotated too
    for section, name, field in numeric:
        assert bounds_of(field.annotation, field.metadata), f"{section}.{name} declares no range"


@pytest.mark.parametrize(
    "toml, key",
    [
        ("[cluster.graph]\nknn_k = 0\n", "cluster.graph.knn_k (line 2): Input should be greater than or equal to 1"),
        (
            "[cluster.resolution]\nsearch_step_back = 1.5\n",
            "cluster.resolution.search_step_back (line 2): Input should be less",
        ),
        (
            "[cluster.resolution]\nleiden_resolution = -2.0\n",
            "cluster.resolution.leiden_resolution (line 2): Input should be greater than 0",
        ),
        ("[cluster.rerank]\nrerank_threshold = 2\n", "cluster.rerank.rerank_threshold (line 2): Input should be less"),
        (
            "[cluster.hdbscan]\nmin_cluster_size = 1\n",
            "cluster.hdbscan.min_cluster_size (line 2): Input should be greater",
        ),
        ("[aspects]\naspect_threshold = 1.5\n", "aspects.aspect_threshold (line 2): Input should be less"),
        ("[serve]\nmax_batch = 0\n", "serve.max_batch (line 2): Input should be greater"),
        ("[refresh]\nid_match_jaccard = 0\n", "refresh.id_match_jaccard (line 2): Input should be greater than 0"),
        ("[cluster]\nmerge_threshold = 5\n", "cluster.refine.merge_threshold (line 2): Input should be less"),
    ],
)
def test_a_value_out_of_range_fails_naming_file_key_line_and_bound(tmp_path, toml, key):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised, warnings.catch_warnings():
        warnings.simplefilter("ignore", MovedSettingWarning)
        Config.load(path)
    assert str(raised.value).startswith(f"{path}: {key}")


def test_moved_keys_still_read_with_a_warning_naming_the_new_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[cluster]\nmethod = 'leiden'\nmerge_threshold = 0.9\nknn_k = 7\nreranker = 'llm_judge'\nseed = 3\n"
        "aspect_buckets = false\n[cluster.knn]\nann_probe = 5\n[naming]\nseed = 3\n"
    )
    with pytest.warns(MovedSettingWarning) as caught:
        config = Config.load(path)
    messages = {str(w.message) for w in caught}
    assert (
        f"{path}: cluster.merge_threshold is now cluster.refine.merge_threshold; the old key is deprecated" in messages
    )
    assert {f"{path}: {old} is now {new}; the old key is deprecated" for old, new in [
        ("cluster.knn_k", "cluster.graph.knn_k"), ("cluster.knn", "cluster.graph.knn"), ("cluster.seed", "seed"),
        ("cluster.reranker", "cluster.rerank.reranker"), ("cluster.aspect_buckets", "aspects.aspect_buckets"),
        ("naming.seed", "seed"),
    ]} <= messages  # fmt: skip
    assert (config.cluster.method, config.cluster.refine.merge_threshold, config.cluster.graph.knn_k) == (
        "leiden",
        0.9,
        7,
    )
    assert (config.cluster.rerank.reranker, config.aspects.aspect_buckets, config.seed) == ("llm_judge", False, 3)
    assert config.cluster.graph.knn.ann_probe == 5
    assert Config.load(path) == config.with_overrides()  # a moved config is an ordinary one


def test_a_moved_key_that_disagrees_with_its_new_name_fails(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 1\n[cluster]\nseed = 2\n")
    with pytest.raises(ConfigError, match=r"c\.toml: cluster\.seed = 2 and seed = 1: cluster\.seed is now seed"):
        Config.load(path)


def test_an_old_stored_config_reads_silently_in_the_new_layout():
    """A store written before the split holds the flat [cluster] and every section's seed."""
    old = Config().stored()
    old["cluster"] = {"method": "auto", "merge_threshold": 0.8, "knn": {"ann_probe": 9}, "seed": 4}
    old["llm"]["seed"] = 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = Config.from_stored(old)
    assert config.cluster.refine.merge_threshold == 0.8 and config.cluster.graph.knn.ann_probe == 9
    assert config.seed == 0  # the stored top-level seed wins over the sections' old copies

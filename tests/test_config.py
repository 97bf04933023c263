"""The TOML config: defaults printed as TOML read back to the same config; errors name the file and key."""

import tomllib

import pytest

from clado.config import Config, ConfigError, defaults_toml


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
    b.cluster.seed = 3
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

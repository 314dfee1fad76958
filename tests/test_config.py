"""Recipe loading: ``base_recipe`` (a recipe starting from a sibling) on hand-written files."""

from __future__ import annotations

import os
import textwrap

import pytest

from tf_rcnn.config import ConfigError, base_recipe, load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(directory, name: str, body: str) -> str:
    path = os.path.join(str(directory), name + ".py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(body))
    return path


BASE = """
    from tf_rcnn.config import default_config


    def get_config():
        config = default_config()
        config.model.num_classes = 3
        config.train.total_steps = 100
        return config
"""


def test_derived_recipe_is_base_plus_overrides(tmp_path):
    _write(tmp_path, "base", BASE)
    derived = _write(tmp_path, "derived", """
        from tf_rcnn.config import base_recipe


        def get_config():
            config = base_recipe("base")
            config.model.type = "mask_rcnn"
            config.train.total_steps = 200
            return config
    """)
    expected = load_config_file(str(tmp_path / "base.py"))
    expected.model.type = "mask_rcnn"
    expected.train.total_steps = 200
    got = load_config_file(derived)
    assert got.to_dict() == expected.to_dict()
    assert got.model.num_classes == 3  # from the base, not the defaults (80)


def test_name_with_or_without_py_and_relative_to(tmp_path):
    _write(tmp_path, "base", BASE)
    # Called from this test file, the caller's directory is tests/: say where to look instead.
    by_dir = base_recipe("base", relative_to=str(tmp_path))
    by_file = base_recipe("base.py", relative_to=str(tmp_path / "somewhere.py"))
    assert by_dir.to_dict() == by_file.to_dict()
    assert by_dir.train.total_steps == 100
    # Each call runs get_config again: the caller owns (and may change) what it gets.
    by_dir.train.total_steps = 1
    assert base_recipe("base", relative_to=str(tmp_path)).train.total_steps == 100


def test_repo_mask_recipe_is_the_faster_recipe_plus_the_mask_branch():
    # configs/mask_rcnn_r50_fpn_coco.py restates only default-valued mask settings, so it equals
    # its base with the model type changed.
    configs = os.path.join(REPO, "configs")
    mask = load_config_file(os.path.join(configs, "mask_rcnn_r50_fpn_coco.py"))
    faster = base_recipe("faster_rcnn_r50_fpn_coco", relative_to=configs)
    faster.model.type = "mask_rcnn"
    assert mask.to_dict() == faster.to_dict()


def test_missing_base_names_the_path(tmp_path):
    derived = _write(tmp_path, "derived", """
        from tf_rcnn.config import base_recipe


        def get_config():
            return base_recipe("no_such_recipe")
    """)
    with pytest.raises(FileNotFoundError) as info:
        load_config_file(derived)
    assert os.path.join(str(tmp_path), "no_such_recipe.py") in str(info.value)


def test_cycle_is_refused(tmp_path):
    for name, other in (("a", "b"), ("b", "a")):
        _write(tmp_path, name, f"""
            from tf_rcnn.config import base_recipe


            def get_config():
                return base_recipe("{other}")
        """)
    with pytest.raises(ConfigError, match="cycle") as info:
        load_config_file(str(tmp_path / "a.py"))
    message = str(info.value)
    assert message.index("a.py") < message.index("b.py") < message.rindex("a.py")
    # A recipe basing on itself is the shortest cycle.
    selfish = _write(tmp_path, "selfish", """
        from tf_rcnn.config import base_recipe


        def get_config():
            return base_recipe("selfish")
    """)
    with pytest.raises(ConfigError, match="cycle"):
        load_config_file(selfish)
    # A refused cycle leaves nothing behind: a sound chain still loads afterwards.
    _write(tmp_path, "base", BASE)
    assert base_recipe("base", relative_to=str(tmp_path)).model.num_classes == 3

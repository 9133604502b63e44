"""`--model NAME`: shipped models by short name (scadm.shipped), the folder path as before, and one
clear line for a name that is unknown or whose model is not installed. The realistic model need not
exist: the asset root is pointed at a temporary folder where it matters."""

import pytest

from scadm import shipped
from scadm.cli import main
from scadm.errors import InputError
from scadm.shipped import SHIPPED, model_help, resolve_model, shipped_name


@pytest.fixture()
def assets(tmp_path, monkeypatch):
    """An asset root holding only the demo model's index (enough to count as installed)."""
    (tmp_path / "demo-procedural-64").mkdir()
    (tmp_path / "demo-procedural-64" / "model_index.json").write_text("{}")
    monkeypatch.setattr(shipped, "ASSETS", tmp_path)
    return tmp_path


def test_names_resolve_to_their_asset_folders_and_none_to_the_demo_model():
    demo = resolve_model("demo")
    assert demo == shipped.ASSETS / "demo-procedural-64" and (demo / "model_index.json").is_file()
    assert resolve_model(None) == demo
    from scadm.demo import DEMO_MODEL

    assert demo == DEMO_MODEL, "scadm.demo's DEMO_MODEL is the table's demo entry"


def test_a_folder_path_is_returned_as_given(tmp_path):
    assert resolve_model(str(tmp_path)) == tmp_path
    assert resolve_model(tmp_path) == tmp_path
    (tmp_path / "demo").mkdir()
    assert resolve_model(tmp_path / "demo") == tmp_path / "demo", "a path is not taken for a name"


def test_a_shipped_folder_is_named_back_and_any_other_is_not(tmp_path):
    assert shipped_name(resolve_model("demo")) == "demo"
    assert shipped_name(str(shipped.ASSETS / "x" / ".." / "demo-procedural-64")) == "demo"
    assert shipped_name(tmp_path) is None


def test_an_installed_realistic_model_resolves(assets):
    (assets / "realistic-64").mkdir()
    (assets / "realistic-64" / "model_index.json").write_text("{}")
    assert resolve_model("realistic") == assets / "realistic-64"


def test_a_name_whose_model_is_not_installed_says_so_and_lists_the_names(assets):
    with pytest.raises(InputError) as err:
        resolve_model("realistic")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--model realistic: the realistic model is not installed")
    assert message.endswith("known names: demo, realistic (not installed)")


def test_an_unknown_name_lists_the_known_names():
    with pytest.raises(InputError, match=r"^--model realstic: neither a known model name \(demo, realistic") as err:
        resolve_model("realstic")
    assert "\n" not in str(err.value)


def test_the_help_names_every_model_and_the_realistic_terms():
    text = model_help()
    assert all(f"'{name}'" in text for name in SHIPPED) and "(default: demo)" in text
    assert "NON-COMMERCIAL" in SHIPPED["realistic"].summary and "FFHQ" in SHIPPED["realistic"].summary


@pytest.mark.parametrize("command", [["sample", "mask.png"], ["edit", "--image", "a.png", "--mask", "auto"], ["demo"]])
def test_commands_print_one_line_for_an_unknown_name(command, capsys):
    assert main([*command, "--model", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--model nonsense: neither a known model name (demo, realistic" in err


def test_serve_and_evaluate_refuse_a_missing_model_before_starting(assets, capsys):
    assert main(["serve", "--model", "realistic"]) == 2
    assert "scadm serve: error: --model realistic: the realistic model is not installed" in capsys.readouterr().err
    assert main(["evaluate", "--protocol", "timing", "--model", "realistic", "--out", str(assets)]) == 2
    assert "scadm evaluate: error: --model realistic: the realistic model is not installed" in capsys.readouterr().err


def test_sample_with_the_demo_model_by_name(tmp_path):
    """The short name reaches the pipeline loader: a one-step render with the shipped demo model."""
    from scadm.data.synthetic import render_face
    from scadm.io import save_mask
    from scadm.labels import CELEBAMASK_HQ

    save_mask(render_face(5, 64).labels, tmp_path / "m.png", CELEBAMASK_HQ)
    out = tmp_path / "out"
    args = ["sample", str(tmp_path / "m.png"), "--model", "demo", "--num", "1", "--steps", "1", "--out", str(out)]
    assert main(args) == 0
    assert (out / "m_seed0.png").is_file()

"""Config composition: every recipe composes, every group's options override, bad input fails early."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from camsim.cli import CONF_DIR
from camsim.config import validate
from tests.conftest import compose_cfg, run_cli

CONF = Path(CONF_DIR)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", _options("experiment"))
@pytest.mark.parametrize("app", ["config", "train", "eval"])
def test_every_experiment_composes_and_validates(experiment: str, app: str) -> None:
    cfg = compose_cfg([f"experiment={experiment}"], config_name=app)
    HydraConfig().set_config(cfg)
    validate(cfg)
    assert OmegaConf.select(cfg, "patches.size") > 0
    # the objects a run builds from it can be built (nothing is rendered or trained here)
    hydra.utils.instantiate(cfg.model, num_classes=len(cfg.split.a) if not isinstance(cfg.split.a, int) else cfg.split.a,
                            patch_size=cfg.patches.size)
    hydra.utils.instantiate(cfg.similarity, in_features=200)


def test_paper_recipe_states_the_paper_numbers() -> None:
    cfg = compose_cfg(["experiment=paper"])
    assert (cfg.split.a, cfg.split.b, cfg.split.c, cfg.split.known) == (40, 20, 5, 5)
    assert cfg.patches.size == 256 and cfg.patches.min_entropy == 4.0
    assert cfg.patches.per_model.train_a == 50000 and cfg.patches.per_model.train_b == 20000
    assert cfg.phase_a.max_epochs == 30 and cfg.phase_b.max_epochs == 60
    assert cfg.phase_a.optimizer.lr == 0.001 and cfg.phase_a.optimizer.weight_decay == 0.0005
    assert cfg.phase_a.scheduler.step_size == 3 and cfg.phase_a.scheduler.gamma == 0.5
    assert cfg.phase_b.optimizer.lr == 0.0005 and list(cfg.phase_b.optimizer.betas) == [0.9, 0.99]
    assert cfg.phase_b.train_pairs == 500000 and cfg.eval.eta == 0.5
    assert cfg.phase_b.feature_layer == "fc_a2.pre" and cfg.model.feature_layer is None


@pytest.mark.parametrize("group", ["data", "split", "model", "similarity", "trainer", "logger", "callbacks"])
def test_each_group_option_overrides(group: str) -> None:
    for option in _options(group):
        overrides = [f"{group}={option}"]
        if group == "data" and OmegaConf.is_missing(compose_cfg([f"data={option}"]).data, "root"):
            overrides.append("data.root=/some/photos")
        cfg = compose_cfg(overrides)
        HydraConfig().set_config(cfg)
        validate(cfg)
        choice = cfg.hydra.runtime.choices[group]
        assert choice == option


def test_debug_profile_profiles_one_epoch_of_each_phase_at_full_size(tmp_path: Path) -> None:
    """``debug=profile``: Lightning's simple profiler on one epoch per phase; the recipe's data stay."""
    from lightning.pytorch.profilers import SimpleProfiler

    quick = compose_cfg(["experiment=quick"])
    cfg = compose_cfg(["experiment=quick", "debug=profile"])
    HydraConfig().set_config(cfg)
    validate(cfg)
    assert cfg.phase_a.max_epochs == cfg.phase_b.max_epochs == 1
    assert cfg.patches.per_model == quick.patches.per_model and cfg.patches.size == quick.patches.size
    trainer = hydra.utils.instantiate(cfg.trainer, default_root_dir=str(tmp_path), enable_progress_bar=False,
                                      logger=False)
    assert isinstance(trainer.profiler, SimpleProfiler)



@pytest.mark.parametrize("group", ["split", "data"])
def test_a_group_option_chosen_on_the_command_line_is_the_same_under_every_recipe(group: str) -> None:
    # a recipe may pick a group's default option, never change the option a user names
    # (quick's `split: {b: 25}` once turned `split=cameras` into b=25 and `experiment=pixel
    # data=folder` failed on its data.synth settings)
    for option in _options(group):
        extra = ["data.root=/some/photos"] if group == "data" and OmegaConf.is_missing(
            compose_cfg([f"data={option}"]).data, "root") else []
        nodes = {e: OmegaConf.to_container(compose_cfg([f"experiment={e}", f"{group}={option}", *extra])[group])
                 for e in _options("experiment")}
        first = next(iter(nodes.values()))
        assert all(n == first for n in nodes.values()), (group, option, nodes)


def test_readme_split_command_and_recipe_sets() -> None:
    cfg = compose_cfg(["data=cameras", "split=cameras"])        # camsim-data split data=cameras split=cameras
    assert list(cfg.split.b) == ["NIKON_D70s", "NIKON_D200"] and list(cfg.split.c) == ["samsung_SM_J330F"]
    default = compose_cfg([]).split
    assert (default.a, default.b, default.c) == (10, 25, 5)       # the quick recipe's sets
    assert compose_cfg(["split=counts"]).split.b == 15            # the option as written
    assert compose_cfg(["split.b=15"]).split.b == 15              # a key override still applies
    pixel = compose_cfg(["experiment=pixel"])
    assert pixel.data.synth.processing.smoothing == 0.6 and pixel.model.in_channels == 3
    folder = compose_cfg(["experiment=pixel", "data=folder", "data.root=/some/photos"])
    HydraConfig().set_config(folder)
    validate(folder)
    assert folder.model.in_channels == 3


def test_the_documented_local_override_file_composes_and_the_command_line_still_wins(tmp_path: Path) -> None:
    """conf/local/README.md's example, as conf/local/default.yaml of a copy of conf/."""
    import re
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    example = re.search(r"```yaml\n(.*?)```", (CONF / "local" / "README.md").read_text(), re.S).group(1)
    (conf / "local" / "default.yaml").write_text(example)
    for overrides, accelerator in (([], "gpu"), (["trainer=cpu"], "cpu")):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        assert cfg.trainer.accelerator == accelerator and cfg.paths.artefact_dir == "/scratch/camsim/artefacts"
    GlobalHydra.instance().clear()

def test_key_overrides_reach_the_config() -> None:
    cfg = compose_cfg(["patches.size=128", "split.a=[m1,m2]", "phase_a.optimizer.lr=0.1", "eval.eta=auto"])
    assert cfg.patches.size == 128 and list(cfg.split.a) == ["m1", "m2"]
    assert cfg.phase_a.optimizer.lr == 0.1 and cfg.eval.eta == "auto"


@pytest.mark.parametrize("override,message", [
    ("data.num_modelz=3", "num_modelz"),
    ("patches.sise=64", "sise"),
    ("patches.size=big", "patches.size"),
    ("trainer.devics=2", "devics"),
])
def test_unknown_key_or_wrong_type_fails_naming_it(override: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        compose_cfg([override])


@pytest.mark.parametrize("override,message", [
    ("split.b=[]", "split.b"),
    ("split.a=0", "split.a"),
    ("split.image_fractions=[0.5,0.5,0.5]", "image_fractions"),
    ("eval.eta=1.5", "eval.eta"),
    ("patches.size=60", "patches.size"),
    ("patches.align=0", r"patches.align=0: the grid patches are cut on"),
    ("patches.align=4", r"patches.align=4: the JPEG branch \(model.jpeg\) reads 8×8 blocks"),
    ("model.in_channels=2", "model.in_channels=2: 1 .green-channel patches"),
    ("data.image_size=[32,48]", r"data.image_size=\[32, 48\]: smaller than one patches.size=64 patch"),
    ("splicing.image_size=[33,32]", r"splicing.image_size=\[33, 32\]: both sides even"),
    ("splicing.num_images=0", "splicing.num_images=0"),
    ("splicing.modes=[graph,bogus]", r"splicing.modes=\['graph', 'bogus'\]: a non-empty list of"),
    ("splicing.modes=[]", "splicing.modes"),
    ("splicing.target_far=0", "splicing.target_far"),
    ("splicing.stride=0", "splicing.stride"),
    ("splicing.max_clipped=1.5", r"splicing.max_clipped=1.5: a share of a patch's pixels in \[0, 1\]"),
])
def test_validate_names_the_bad_key(override: str, message: str) -> None:
    cfg = compose_cfg([override])
    with pytest.raises(ValueError, match=message):
        validate(cfg)


def test_cli_prints_composed_config() -> None:
    res = run_cli("camsim-run", "--cfg", "job", "patches.size=128")
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.patches.size == 128 and "phase_a" in cfg and "model" in cfg


def test_cli_unknown_group_option_lists_the_options() -> None:
    res = run_cli("camsim-run", "model=mislnett")
    assert res.returncode != 0
    assert "model/mislnett" in res.stderr and "mislnet" in res.stderr and "Available options" in res.stderr


def test_cli_unknown_key_fails_at_start(workdir: Path) -> None:
    res = run_cli("camsim-run", "phase_a.max_epoch=3", cwd=workdir)
    assert res.returncode != 0 and "max_epoch" in res.stderr
    assert not (workdir / "outputs" / "artefacts").exists()  # nothing started


def test_cli_invalid_split_is_one_clear_line(workdir: Path) -> None:
    res = run_cli("camsim-run", "split.known=[nope]", "split.a=[also_nope]", cwd=workdir)
    assert res.returncode == 2
    assert "camsim: error:" in res.stderr and "Traceback" not in res.stderr


def test_feature_layer_is_phase_b_and_model_feature_layer_is_deprecated() -> None:
    from camsim.config import feature_layer

    assert feature_layer(compose_cfg(["phase_b.feature_layer=fc_a1.post"])) == "fc_a1.post"
    with pytest.warns(FutureWarning, match="phase_b.feature_layer=conv4.pool"):
        assert feature_layer(compose_cfg(["model.feature_layer=conv4.pool"])) == "conv4.pool"


def test_model_keys_are_checked_at_start() -> None:
    with pytest.raises(Exception, match="actvation"):
        compose_cfg(["model.actvation=relu"])
    cfg = compose_cfg(["model=mislnet_small", "+model.jpeg.coefficients=27"])  # the README's form still works
    assert cfg.model.jpeg.coefficients == 27


def test_cli_unknown_feature_layer_fails_before_training(workdir: Path) -> None:
    res = run_cli("camsim-run", "debug=fast", "phase_b.feature_layer=nope", cwd=workdir)
    assert res.returncode == 2 and "phase_b.feature_layer='nope'" in res.stderr and "valid names" in res.stderr
    assert not (workdir / "outputs" / "artefacts").exists()  # nothing rendered or trained



@pytest.mark.parametrize("override, message", [
    ("similarity.combine=sum", "similarity does not build: .*combine"),
    ("+similarity.hiden=[64]", "similarity does not build: .*hiden"),
    ("+phase_a.optimizer.momentun=0.9", "phase_a.optimizer / .scheduler does not build: .*momentun"),
    ("+phase_b.optimizer.bettas=[0.9,0.9]", "phase_b.optimizer / .scheduler does not build: .*bettas"),
    ("model.feature_layer=nope", "model.feature_layer='nope'"),   # the key the user set, not its successor
    ("phase_b.loader.num_workers=2 phase_b.loader.persistent_workers=true", "phase_b.loader.persistent_workers"),
    ("phase_b.finetune.enabled=true phase_b.finetune.optimizer=null", "phase_b.finetune.optimizer .*not set"),
])
def test_head_and_optimisers_are_built_at_start(override: str, message: str) -> None:
    """A typo in the head or an optimiser fails before any data is prepared, naming the part."""
    from camsim.pipeline import check_config

    cfg = compose_cfg(override.split())
    HydraConfig().set_config(cfg)
    with pytest.raises(ValueError, match=message), pytest.warns(FutureWarning) if "model." in override \
            else __import__("contextlib").nullcontext():
        check_config(cfg)
    for experiment in _options("experiment"):  # every recipe passes
        cfg = compose_cfg([f"experiment={experiment}", "phase_b.finetune.enabled=true"])
        HydraConfig().set_config(cfg)
        check_config(cfg)

def _realism_variants() -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("realism", Path(__file__).resolve().parents[1] / "benchmarks" / "realism.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.VARIANTS


@pytest.mark.parametrize("variant", sorted(_realism_variants()))
def test_every_realism_variant_composes_with_the_quick_recipe(variant: str) -> None:
    cfg = compose_cfg(["experiment=quick", *_realism_variants()[variant][1]])
    HydraConfig().set_config(cfg)
    validate(cfg)


@pytest.mark.parametrize("variant, base, added", [("b25", "default", 10), ("recipe_b50", "recipe_before", 25)])
def test_realism_larger_b_keeps_the_recipes_a_c_and_known_models(variant: str, base: str, added: int) -> None:
    """More models behind the head, nothing else: Phase A must be the recipe's (same A, same images),
    so the variant's lists must be the recipe's draw, and its extra B models the larger catalogue's new ones."""
    from camsim.data.splits import make_split
    from camsim.synth.traits import catalogue

    recipe = compose_cfg(["experiment=quick", *_realism_variants()[base][1]])  # the recipe it was measured on
    names = [c.name for c in catalogue(int(recipe.data.num_models), int(recipe.data.num_families), int(recipe.data.seed))]
    sp = recipe.split
    drawn = make_split(names, sp.a, sp.b, sp.c, sp.known, int(sp.seed), sp.c_seed)
    cfg = compose_cfg(["experiment=quick", *_realism_variants()[variant][1]])
    more = [c.name for c in catalogue(int(cfg.data.num_models), int(cfg.data.num_families), int(cfg.data.seed))]
    assert more[:len(names)] == names  # a larger catalogue extends the smaller one
    sets = make_split(more, list(cfg.split.a), list(cfg.split.b), list(cfg.split.c), list(cfg.split.known), 0)
    assert (sets.a, sets.c, sets.known) == (drawn.a, drawn.c, drawn.known)
    assert set(drawn.b) < set(sets.b) and len(sets.b) == len(drawn.b) + added
    assert set(sets.b) - set(drawn.b) == set(more[len(names):])


def test_realism_a20_b25_adds_ten_new_models_to_a_and_keeps_b25s_b_c_and_known() -> None:
    from camsim.data.splits import make_split
    from camsim.synth.traits import catalogue

    variants = _realism_variants()
    b25, a20 = (compose_cfg(["experiment=quick", *variants[v][1]]) for v in ("b25", "a20_b25"))
    names = [c.name for c in catalogue(int(a20.data.num_models), int(a20.data.num_families), int(a20.data.seed))]
    sets = make_split(names, list(a20.split.a), list(a20.split.b), list(a20.split.c), list(a20.split.known), 0)
    assert set(b25.split.a) < set(sets.a) and set(sets.a) - set(b25.split.a) == set(names[40:])
    assert (list(sets.b), list(sets.c), list(sets.known)) == (list(b25.split.b), list(b25.split.c), list(b25.split.known))


def test_jpeg_branch_dropout_is_a_model_setting_that_keys_phase_a_only_when_on():
    from camsim.config.checks import backbone_config
    from camsim.pipeline import check_config

    off, on = compose_cfg([]), compose_cfg(["model.jpeg.dropout=0.25"])
    assert off.model.jpeg.dropout == 0.0
    assert "dropout" not in backbone_config(off)["jpeg"]  # the recipe's Phase A artefacts keep their key
    assert backbone_config(on)["jpeg"]["dropout"] == 0.25  # a run with dropout trains its own Phase A
    check_config(on)
    with pytest.raises(Exception, match=r"jpeg.dropout: expected a share in \[0, 1\), got 1.5"):
        check_config(compose_cfg(["model.jpeg.dropout=1.5"]))  # before any work, not after the data

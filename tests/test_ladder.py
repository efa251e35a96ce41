"""The diagnostic ladder's options (tiny 32-px world, CPU): step 3 in the pseudo samples' views and
lights, the V/L warm-up, the start from the ground truth, and the ladder runner."""

from __future__ import annotations

import pytest
import torch
from conftest import S, tiny_config, tiny_model, tiny_target

from gan2shape.diagnostics import canonical_truth, install_projection
from gan2shape.method.config import Stage
from gan2shape.method.sampling import CanonicalState
from gan2shape.method.trainer import Trainer, phases_of
from gan2shape.world import scenes as sy


class _Const(torch.nn.Module):
    """A net that outputs a fixed map for every input image."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value.expand(x.shape[0], *self.value.shape[1:])


def _oracle_at_truth(step3_viewlight: str):
    """A model whose D and A return the ground truth of a face2 scene, the oracle projection, and
    one step-2 draw (its samples, masks, pseudo views and lights)."""
    cfg = tiny_config(projection="oracle", step3_viewlight=step3_viewlight)
    model = install_projection(tiny_model(cfg))
    scene = sy.sample_params("face2", 1, 4)[0]
    t = tiny_target(model)
    t.scene = scene
    t.gan_image = model.gan_image(t)
    truth = canonical_truth(scene, S)
    model.predict_depth = lambda image, border=True: truth["depth"].expand(image.shape[0], -1, -1)
    model.nets["netA"] = _Const(truth["albedo"])
    _, _, proj, pmask, views, lights = model.step2(t, _state(model, t), torch.Generator().manual_seed(1),
                                                   viewlight=True)
    return model, t, scene, proj, pmask, views, lights


def test_step3_in_the_pseudo_views_and_lights_is_minimal_at_the_truth():
    """With the oracle's samples, the true canonical depth and albedo and the pseudo samples' own
    views and lights (the oracle's are the scene's true k_a, k_d plus the pseudo strengths), the
    projected-sample loss of step 3 vanishes; with the untrained V(Q), L(Q) it does not."""
    from gan2shape.method.sampling import pseudo_lights

    model, t, scene, proj, pmask, views, lights = _oracle_at_truth("pseudo")
    assert views.shape == (model.cfg.n_p, 6) and lights.shape == (model.cfg.n_p, 4)
    # the hook reports the lights its renders are made in: the true ones, not the model's k_a, k_d
    g = torch.Generator().manual_seed(1)
    _, _, raw_views, ldir, lr = model.pseudo_samples(_state(model, t), model.cfg.n_p, g, True)
    rl = pseudo_lights(ldir, lr, scene.k_a, scene.k_d, model.cfg.rand_light[6])
    assert torch.equal(views, raw_views) and torch.allclose(lights, rl, atol=1e-7)
    for flip in (False, True):  # face2 is mirror-symmetric: the flip branch is at the truth too
        _, terms, _ = model.step3(t, proj, pmask, flip=flip, proj_view=views, proj_light=lights)
        assert terms["proj_l1"] < 1e-6 and terms["proj_perc"] < 1e-6, (flip, terms)
        _, terms, _ = model.step3(t, proj, pmask, flip=flip)
        assert terms["proj_l1"] > 0.1, (flip, terms)


def _state(model, t):
    out = model.step1(t)
    return CanonicalState(out.depth[:1], out.albedo[:1], out.normals[:1], out.k_a[:1], out.k_d[:1]).detach()


def test_gan_projection_carries_the_pseudo_samples_own_lights():
    """For the GAN (and "pseudo") projections a sample's light is its pseudo sample's: the model's
    canonical k_a, k_d plus the pseudo strength, in L's units (so L's head maps it back)."""
    from gan2shape.method.renderer import light_to_physical

    cfg = tiny_config()
    model = tiny_model(cfg)
    t = tiny_target(model)
    t.gan_image = model.gan_image(t)
    st = _state(model, t)
    _, _, _, _, views, lights = model.step2(t, st, torch.Generator().manual_seed(2), viewlight=True)
    _, _, raw_views, ldir, lr = model.pseudo_samples(st, cfg.n_p, torch.Generator().manual_seed(2), True)
    k_a, k_d, direction = light_to_physical(lights)
    alpha = cfg.rand_light[6]
    assert torch.equal(views, raw_views)
    assert torch.allclose(k_a, st.k_a + alpha * lr, atol=1e-6) and torch.allclose(k_d, st.k_d + lr, atol=1e-6)
    assert torch.allclose(direction, ldir, atol=1e-6)


def test_pseudo_viewlight_gives_v_and_l_no_gradient_from_the_projected_samples():
    model, t, _, proj, pmask, views, lights = _oracle_at_truth("pseudo")
    params = list(model.nets["netV"].parameters()) + list(model.nets["netL"].parameters())
    loss, _, s1 = model.step3(t, proj, pmask, proj_view=views, proj_light=lights)
    full = torch.autograd.grad(loss, params, retain_graph=True)
    target_only = torch.autograd.grad(s1.loss.sum(), params)
    assert all(torch.equal(a, b) for a, b in zip(full, target_only))
    loss, _, s1 = model.step3(t, proj, pmask)  # predicted V(Q), L(Q): the samples do reach V and L
    full = torch.autograd.grad(loss, params, retain_graph=True)
    target_only = torch.autograd.grad(s1.loss.sum(), params)
    assert not all(torch.equal(a, b) for a, b in zip(full, target_only))
    with pytest.raises(ValueError, match="together"):
        model.step3(t, proj, pmask, proj_view=views)


def _fit(cfg, tmp_path=None, stop_after=None, ckpt="ck.pth", snapshots=None):
    model = tiny_model(cfg)
    snaps = {}

    def on_log(entry):
        if snapshots and entry["iteration"] in snapshots:
            snaps[entry["iteration"]] = model.nets_state()

    trainer = Trainer(model, log_every=1, on_log=on_log)
    res = trainer.fit(tiny_target(model), checkpoint=None if tmp_path is None else tmp_path / ckpt,
                      checkpoint_every=4, stop_after=stop_after)
    return model, res, snaps


def _same(sa, sb, nets):
    return all(torch.equal(sa[n][k], sb[n][k]) for n in nets for k in sa[n])


def test_resume_with_pseudo_viewlight_is_bitwise_equal(tmp_path):
    """The pool's views and lights are checkpointed with it: a run stopped inside step 3 resumes
    to the uninterrupted run."""
    cfg = tiny_config(step3_viewlight="pseudo", schedule=[Stage(2, 2, 4)])
    ref_model, ref, _ = _fit(cfg)
    _, r1, _ = _fit(cfg, tmp_path, stop_after=3 + 2 + 2 + 2)
    pool = torch.load(tmp_path / "ck.pth", weights_only=True)["targets"][0]["pool"]
    assert pool["views"].shape == (cfg.collect_iters * cfg.n_p, 6) and pool["lights"].shape[1] == 4
    m2, r2, _ = _fit(cfg, tmp_path)
    assert r1.interrupted and not r2.interrupted
    assert _same(m2.nets_state(), ref_model.nets_state(), m2.nets_state())
    assert [e["loss"] for e in r2.log] == [e["loss"] for e in ref.log]


def test_vl_warmup_trains_only_v_and_l_before_the_first_step3(tmp_path):
    """--vl-warmup N: N step-3 iterations of V and L (D, A, E untouched) right before the first
    step 3; the schedule then runs unchanged; a run stopped in or at the end of the warm-up
    resumes bitwise."""
    sched = [Stage(2, 2, 3), Stage(1, 1, 2)]
    phases = phases_of(sched, prior_iters=3, vl_warmup=4)
    assert [(p.stage, p.step, p.n, p.nets) for p in phases] == [
        (-1, 0, 3, ("netD",)), (0, 1, 2, ("netA",)), (0, 2, 2, ("netEnc",)), (0, 3, 4, ("netV", "netL")),
        (0, 3, 3, ("netD", "netA", "netV", "netL")), (1, 1, 1, ("netA",)), (1, 2, 1, ("netEnc",)),
        (1, 3, 2, ("netD", "netA", "netV", "netL"))]
    assert phases_of(sched, 3) == [p for p in phases if p.nets != ("netV", "netL")]
    cfg = tiny_config(vl_warmup=4, schedule=sched)
    ref_model, ref, snaps = _fit(cfg, snapshots={7, 11})
    assert ref.iterations == 3 + (2 + 2 + 3) + (1 + 1 + 2) + 4
    assert [e["step"] for e in ref.log] == [0] * 3 + [1] * 2 + [2] * 2 + [3] * 7 + [1, 2, 3, 3]
    before, after = snaps[7], snaps[11]  # end of step 2 | end of the warm-up
    assert _same(before, after, ("netD", "netA", "netEnc"))
    assert not any(_same(before, after, (n,)) for n in ("netV", "netL"))
    for stop in (9, 11):
        ck = f"ck{stop}.pth"
        _, r1, _ = _fit(cfg, tmp_path, stop_after=stop, ckpt=ck)
        m2, r2, _ = _fit(cfg, tmp_path, ckpt=ck)
        assert r1.interrupted and r2.iterations == ref.iterations
        assert _same(m2.nets_state(), ref_model.nets_state(), m2.nets_state()), stop
        assert [e["loss"] for e in r2.log] == [e["loss"] for e in ref.log]


def test_vl_warmup_with_persistent_optimisers_leaves_d_and_a_alone():
    cfg = tiny_config(vl_warmup=2, optimizers="persistent", schedule=[Stage(1, 1, 1)])
    _, res, snaps = _fit(cfg, snapshots={5, 7})
    assert res.iterations == 3 + 3 + 2
    assert _same(snaps[5], snaps[7], ("netD", "netA", "netEnc"))
    assert not _same(snaps[5], snaps[7], ("netV",))


def test_ladder_options_are_checked():
    with pytest.raises(ValueError, match="step3_viewlight"):
        tiny_config(step3_viewlight="true")
    with pytest.raises(ValueError, match="vl_warmup"):
        tiny_config(vl_warmup=-1)
    from gan2shape.method.config import GeneralizedConfig
    from gan2shape.method.generalized import fit_generalized

    model = tiny_model(tiny_config(vl_warmup=1))
    with pytest.raises(ValueError, match="generalized"):
        fit_generalized(Trainer(model), [tiny_target(model)], GeneralizedConfig(epochs=1))


def _scene_target(model, seed: int = 4):
    """A target that is the world's render of a face2 scene, with its scene and input-view depth."""
    from gan2shape.world.render import render_batch

    scene = sy.sample_params("face2", 1, seed)[0]
    r = render_batch([scene], size=S)
    t = tiny_target(model)
    t.image, t.gt_depth, t.scene = r["image"], r["depth"], scene
    return t


def test_start_from_truth_fits_d_and_a_to_the_ground_truth():
    """--init-truth: D and A are fitted to the true canonical depth and albedo, the fit becomes the
    run's start (reset snapshot, no prior pre-fit) and its depth metrics are returned."""
    from gan2shape.method.prefit import albedo_map_loss, depth_prior_loss
    from gan2shape.truth_start import start_from_truth

    model = tiny_model(tiny_config())
    trainer = Trainer(model)
    t = _scene_target(model)
    truth = canonical_truth(t.scene, S)

    def errors():
        with torch.no_grad():
            return (float(depth_prior_loss(model, t.image, truth["depth"])),
                    float(albedo_map_loss(model, t.image, truth["albedo"])))

    d0, a0 = errors()
    start = start_from_truth(trainer, [t], iters=20)
    d1, a1 = errors()
    assert d1 < 0.01 * d0 and a1 < 0.1 * a0, (d0, d1, a0, a1)
    assert trainer.pretrained_depth and _same(trainer.initial_state, model.nets_state(), model.nets_state())
    assert set(start[0]) == {"start_side", "start_mad"} and start[0]["start_side"] > 0
    assert phases_of(model.cfg.schedule, 0)[0].step == 1  # what fit() runs: no pre-fit phase
    t.scene = None
    with pytest.raises(ValueError, match="scene"):
        start_from_truth(trainer, [t], iters=1)


def test_a_run_from_the_truth_resumes_although_the_fit_differs_slightly(tmp_path, caplog):
    """The checkpoint of a run from the truth records how the fit was made, not its weights: on CUDA
    a re-run fit differs in the last bits (cuDNN), and the run must still resume, not restart."""
    from gan2shape.truth_start import start_from_truth

    cfg = tiny_config(schedule=[Stage(2, 2, 3)], collect_iters=2)
    ck = tmp_path / "run.ckpt"

    def call(jitter: float, **fit):
        model = tiny_model(cfg)
        trainer = Trainer(model, log_every=1)
        t = _scene_target(model)
        start_from_truth(trainer, [t], iters=3)
        with torch.no_grad():  # what a non-deterministic backward would leave
            for p in model.nets["netD"].parameters():
                p.add_(jitter)
        trainer.initial_state = model.nets_state()
        return trainer.fit(t, checkpoint=ck, **fit)

    first = call(0.0, stop_after=4)
    assert first.interrupted and ck.exists()
    with caplog.at_level("INFO", logger="gan2shape"):
        rest = call(1e-6)
    assert "resuming at iteration 4" in caplog.text and "starting afresh" not in caplog.text
    assert rest.iterations == 7 and rest.log[0]["iteration"] == first.log[0]["iteration"]


def _ladder():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "ladder.py"
    spec = importlib.util.spec_from_file_location("ladder", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_ladder_runs_every_rung_at_toy_scale(world):
    """bench/ladder.py on 2 face2 images with the tiny GAN: six rungs, start/final/drift per run,
    JSON + CSV; a second call reuses the finished runs."""
    import csv
    import json

    from gan2shape.world.dataset import save_test_set

    save_test_set(world / "test", "face2", 2, 0, size=S)
    argv = ["--family", "face2", "--n", "2", "--test-root", str(world / "test"), "--gan", str(world / "gan.pt"),
            "--view-mvn", str(world / "view_mvn.pth"), "--light-mvn", str(world / "light_mvn.pth"),
            "--out", str(world / "ladder"), "--invert-steps", "2", "--stage-iters", "1,1,2", "--prior-iters", "2",
            "--vl-warmup", "1", "--device", "cpu",
            "--f1-d", "2", "--np", "2", "--collect-iters", "1"]   # passed to reconstruct (tiny GAN, toy scale)
    lad = _ladder()
    result = lad.main(argv)
    assert list(result["rungs"]) == lad.DEFAULT_RUNGS and all(s["n"] == 2 for s in result["rungs"].values())
    iters = {r["rung"]: r["iterations"] for r in result["runs"]}
    assert iters == {"truth_pseudo": 4, "truth_predicted": 4, "truth_warmup": 5,   # no pre-fit, +1 warm-up
                     "prior_pseudo": 6, "prior_predicted": 6, "prior_warmup": 7}
    for r in result["runs"]:
        assert r["drift_side"] == pytest.approx(r["final_side"] - r["start_side"])
        if r["rung"].startswith("truth"):  # the log's start is --init-truth's recorded start
            m = json.loads((world / "ladder" / "runs" / r["rung"] / r["image"] / "metrics.json").read_text())
            assert r["start_side"] == pytest.approx(100 * m["start_side"], rel=1e-5)
    assert result["criterion"]["rung"] == "truth_pseudo" and result["criterion"]["passed"] is None
    with open(world / "ladder" / "ladder.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    stamp = (world / "ladder" / "runs" / "truth_pseudo" / result["images"][0] / "metrics.json").stat().st_mtime
    again = lad.main(argv)
    assert again["runs"] == result["runs"]
    assert (world / "ladder" / "runs" / "truth_pseudo" / result["images"][0] / "metrics.json").stat().st_mtime == stamp


def test_init_truth_flag_checks(world):
    from gan2shape.cli import main

    base = ["reconstruct", "--image", str(world / "img0.png"), "--latent", str(world / "img0.pt"),
            "--gan", str(world / "gan.pt"), "--view-mvn", str(world / "view_mvn.pth"),
            "--light-mvn", str(world / "light_mvn.pth"), "--out", str(world / "out"), "--init-truth"]
    with pytest.raises(SystemExit, match="--init-truth needs --scene"):
        main(base)
    scene = world / "s.json"
    scene.write_text("{}")
    with pytest.raises(SystemExit, match="--prior-iters >= 1"):
        main(base + ["--scene", str(scene), "--prior-iters", "0"])


def test_joint_pretraining_runs_the_warmup_and_the_pseudo_viewlight():
    """Joint pre-training takes the warm-up phase from phases_of and fills its pools with views and lights."""
    from gan2shape.method.pretrain import fit_joint

    cfg = tiny_config(schedule=[Stage(1, 1, 2)], collect_iters=4, vl_warmup=2, step3_viewlight="pseudo")
    model = tiny_model(cfg)
    trainer = Trainer(model, log_every=1)
    snaps = {}

    def on_log(entry):
        if entry["iteration"] in (2, 4):  # end of step 2 | end of the warm-up
            snaps[entry["iteration"]] = model.nets_state()

    trainer.on_log = on_log
    res = fit_joint(trainer, [tiny_target(model, f"im{i}", i) for i in range(2)])
    assert res.iterations == 1 + 1 + 2 + 2 and [e["step"] for e in res.log[1:]] == [1, 2, 3, 3, 3, 3]
    assert _same(snaps[2], snaps[4], ("netD", "netA", "netEnc")) and not _same(snaps[2], snaps[4], ("netV",))


def test_ladder_batch_equals_image_by_image(world):
    """--batch trains a prior rung's images as independent models in one call: the same final
    SIDE / MAD as image-by-image runs (up to rounding), the same files per image; truth rungs refuse a batch;
    --jobs runs the images in parallel processes with the same results."""
    from gan2shape.world.dataset import save_test_set

    save_test_set(world / "test", "face2", 2, 0, size=S)
    base = ["--family", "face2", "--n", "2", "--test-root", str(world / "test"), "--gan", str(world / "gan.pt"),
            "--view-mvn", str(world / "view_mvn.pth"), "--light-mvn", str(world / "light_mvn.pth"),
            "--invert-steps", "2", "--stage-iters", "1,1,2", "--prior-iters", "2", "--device", "cpu",
            "--rungs", "prior_predicted", "--f1-d", "2", "--np", "2", "--collect-iters", "1", "--seed", "3"]
    lad = _ladder()
    one = lad.main(base + ["--out", str(world / "one")])
    lat = ["--latents", str(world / "one" / "latents")]
    both = lad.main(base + lat + ["--out", str(world / "both"), "--batch"])
    assert [r["image"] for r in both["runs"]] == [r["image"] for r in one["runs"]]
    for a, b in zip(one["runs"], both["runs"]):
        # float32: batched and one-by-one convolutions round differently, and Adam's first steps amplify
        # that (on an AMD EPYC: 0.3 % at the start, after the 2-iteration pre-fit and step 1, and 1.2 % at
        # the end); tests/test_batched.py checks batched = sequential exactly, in float64
        for k in ("start_side", "start_mad", "final_side", "final_mad"):
            assert b[k] == pytest.approx(a[k], rel=5e-2), (a["image"], k)
        assert b["iterations"] == a["iterations"]
        files = sorted(p.name for p in (world / "both" / "runs" / "prior_predicted" / b["image"]).iterdir())
        assert "metrics.json" in files and "log.json" in files
    # --jobs 2: the same image-by-image runs, each in its own process with its own log
    par = lad.main(base + lat + ["--out", str(world / "par"), "--jobs", "2"])
    assert [(r["image"], r["final_side"], r["final_mad"]) for r in par["runs"]] == \
        [(r["image"], r["final_side"], r["final_mad"]) for r in one["runs"]]
    assert sorted(p.name for p in (world / "par" / "logs").iterdir()) == \
        sorted(f"prior_predicted_{r['image']}.log" for r in one["runs"])
    args, _ = lad.parse_args(base + ["--out", str(world / "x")])
    ims = lad.test_images(world / "test", "face2", 2)
    with pytest.raises(SystemExit, match="one by one"):
        lad.reconstruct_argv(args, "truth_pseudo", ims, [world / "a.pt", world / "b.pt"], [])


def test_ladder_joint_rungs_start_from_a_joint_pretrain(world):
    """joint_shared / joint_independent load all five nets of a `gan2shape pretrain` file (no pre-fit:
    1 + 1 + 2 iterations), write each image's run; a shared group logs one start for its images, the
    independent models their own; without --pretrain the rungs are refused before any work."""
    import argparse

    from gan2shape.cli import main
    from gan2shape.world.dataset import save_test_set

    save_test_set(world / "test", "face2", 2, 0, size=S)
    base = ["--family", "face2", "--n", "2", "--test-root", str(world / "test"), "--gan", str(world / "gan.pt"),
            "--view-mvn", str(world / "view_mvn.pth"), "--light-mvn", str(world / "light_mvn.pth"),
            "--stage-iters", "1,1,2", "--device", "cpu", "--f1-d", "2", "--np", "2", "--collect-iters", "1"]
    lad = _ladder()
    with pytest.raises(SystemExit, match="need --pretrain"):
        lad.main(base + ["--out", str(world / "x"), "--rungs", "joint_shared"])
    images = lad.test_images(world / "test", "face2", 2)
    lat = lad.latents(argparse.Namespace(latents=None, out=world / "lad", gan=world / "gan.pt", invert_steps=2,
                                         device="cpu", threads=None), images)
    (world / "train.txt").write_text("".join(f"{im['image']} {lat[im['name']]}\n" for im in images))
    assert main(["prior", "--name", "ellipsoid", "--mask", str(images[0]["mask"]), "--image-size", str(S),
                 "--out", str(world / "prior0.npy")]) == 0
    pre = world / "pre.pth"
    assert main(["pretrain", "--list", str(world / "train.txt"), "--first-prior", str(world / "prior0.npy"),
                 "--gan", str(world / "gan.pt"), "--view-mvn", str(world / "view_mvn.pth"),
                 "--light-mvn", str(world / "light_mvn.pth"), "--image-size", str(S), "--crop", "0",
                 "--num-stages", "1", "--stage-iters", "1,1,1", "--np", "2", "--collect-iters", "4",
                 "--prior-iters", "2", "--f1-d", "2", "--net-width", "0.5", "--device", "cpu", "--out", str(pre)]) == 0
    base += ["--net-width", "0.5"]     # a narrow pre-train (--net-width) runs at its width
    result = lad.main(base + ["--out", str(world / "lad"), "--rungs", "joint_shared", "joint_independent",
                              "--pretrain", str(pre), "--group", "2"])
    runs = {(r["rung"], r["image"]): r for r in result["runs"]}
    assert len(runs) == 4 and all(r["iterations"] == 4 for r in runs.values())
    a, b = (runs[("joint_shared", im["name"])] for im in images)
    assert a["start_side"] == b["start_side"]                      # the group's mean
    c, d = (runs[("joint_independent", im["name"])] for im in images)
    assert c["start_side"] != d["start_side"]
    cfg = (world / "lad" / "runs" / "joint_shared" / images[0]["name"] / "config.json").read_text()
    assert str(pre) in cfg and '"independent": false' in cfg and '"net_width": 0.5' in cfg
    # --jobs: groups in parallel processes (each logging to its own file) = the same groups one by one
    par, seq = ({(r["rung"], r["image"]): r for r in lad.main(
        base + ["--out", str(world / d), "--latents", str(world / "lad" / "latents"), "--rungs", "joint_shared",
                "--pretrain", str(pre), "--group", "1", "--jobs", j])["runs"]} for d, j in (("par", "2"), ("seq", "1")))
    assert par.keys() == seq.keys() and len(par) == 2
    assert all(par[k]["final_side"] == seq[k]["final_side"] for k in par)
    assert sorted(p.name for p in (world / "par" / "logs").iterdir()) == [f"joint_shared_{im['name']}.log" for im in images]


@pytest.mark.slow
def test_mode_parity_runs_both_modes_and_seeds_at_toy_scale(world):
    """bench/mode_parity.py: one inversion per family, a batched prior_predicted run per (mode, seed)
    in parallel processes, per-run numbers equal to each run's own ladder.json, a resumed call runs nothing."""
    import importlib.util
    import json
    from pathlib import Path

    from gan2shape.world.dataset import save_test_set

    save_test_set(world / "test", "face2", 2, 0, size=S)
    path = Path(__file__).resolve().parents[1] / "bench" / "mode_parity.py"
    spec = importlib.util.spec_from_file_location("mode_parity", path)
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    argv = ["--families", "face2", "--n", "2", "--seeds", "0", "1", "--test-root", str(world / "test"),
            "--gan", str(world / "gan.pt"), "--view-mvn", str(world / "view_mvn.pth"),
            "--light-mvn", str(world / "light_mvn.pth"), "--invert-steps", "2", "--stage-iters", "1,1,2",
            "--prior-iters", "2", "--jobs", "2", "--out", str(world / "mp"),
            "--extra", "--f1-d", "2", "--np", "2", "--collect-iters", "1"]
    out = mp.main(argv)
    fam = out["families"]["face2"]
    assert sorted(fam["runs"]) == ["faithful_seed0", "faithful_seed1", "fast_seed0", "fast_seed1"]
    own = json.loads((world / "mp" / "face2" / "fast_seed1" / "ladder.json").read_text())
    assert fam["runs"]["fast_seed1"]["side"] == [r["final_side"] for r in own["runs"]]
    assert "--seed" in own["reconstruct_extra"] and "fast" in own["reconstruct_extra"]
    assert fam["stats"]["n_images"] == 2 and set(fam["stats"]["side"]["worse_than_start"]) == set(fam["runs"])
    assert (world / "mp" / "mode_parity.csv").read_text().count("\n") == 1 + 8
    stamp = (world / "mp" / "face2" / "fast_seed1" / "ladder.json").stat().st_mtime
    assert mp.main(argv)["families"]["face2"]["runs"] == fam["runs"]
    assert (world / "mp" / "face2" / "fast_seed1" / "ladder.json").stat().st_mtime == stamp
    import shutil   # a variant's runs (own label) are compared with the faithful runs
    for s in (0, 1):
        shutil.copytree(world / "mp" / "face2" / f"fast_seed{s}", world / "mp" / "face2" / f"fast_x_seed{s}")
    var = mp.main(argv + [])["families"]["face2"]["variants"]["fast_x"]
    assert var["runs"]["fast_x_seed1"] == fam["runs"]["fast_seed1"]
    assert var["vs_faithful"]["side"]["fast_minus_faithful"] == fam["stats"]["side"]["fast_minus_faithful"]


def test_ladder_compares_each_rung_with_the_baselines_on_its_own_images(tmp_path):
    """--baselines: each baseline's mean on the rung's images only, the rung's final SIDE over it, and how
    many images beat it; an image missing from the file or a file without the family is an error."""
    lad = _ladder()
    csv_path = tmp_path / "baselines_face2.csv"
    csv_path.write_text("family,method,image,side,mad,mad_unit,mae,mse,status\n"
                        "face2,constant,a,2.0,40,0,0,0,ok\nface2,constant,b,4.0,50,0,0,0,ok\n"
                        "face2,constant,c,9.0,90,0,0,0,ok\n"
                        "face2,prior-ellipsoid,a,1.0,20,0,0,0,ok\nface2,prior-ellipsoid,b,1.0,30,0,0,0,ok\n"
                        "car2,constant,a,7.0,70,0,0,0,ok\n")
    base = lad.baseline_rows(csv_path, "face2")
    assert base["constant"] == {"a": (2.0, 40.0), "b": (4.0, 50.0), "c": (9.0, 90.0)}
    rows = [{"rung": "joint_shared", "image": "a", "final_side": 0.5},
            {"rung": "joint_shared", "image": "b", "final_side": 1.5}]
    out = lad.compare_baselines(rows, base)["joint_shared"]
    assert out["constant"]["side_mean"] == pytest.approx(3.0) and out["constant"]["side_std"] == pytest.approx(1.0)
    assert out["constant"]["mad_mean"] == pytest.approx(45.0)
    assert out["constant"]["side_ratio"] == pytest.approx(1.0 / 3.0)
    assert out["prior-ellipsoid"]["side_ratio"] == pytest.approx(1.0)
    assert out["prior-ellipsoid"]["images_better"] == 1 and out["constant"]["images_better"] == 2
    with pytest.raises(SystemExit, match=r"prior-ellipsoid has no row for \['c'\]"):
        lad.compare_baselines(rows + [{"rung": "joint_shared", "image": "c", "final_side": 1.0}], base)
    with pytest.raises(SystemExit, match="no rows of family box"):
        lad.baseline_rows(csv_path, "box")

"""Trainer: schedules, steps, resume, modes (tiny 32-px world, CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_config, tiny_model, tiny_target

from gan2shape.diagnostics import install_projection, mesh_oracle_samples
from gan2shape.method.config import (
    SCHEDULES,
    GeneralizedConfig,
    Stage,
    init_iterations_schedule,
    schedule_iterations,
)
from gan2shape.method.generalized import fit_generalized
from gan2shape.method.prefit import fit_depth_to_prior
from gan2shape.method.pretrain import Stream, fit_joint, pretrain_file
from gan2shape.method.renderer import view_to_physical
from gan2shape.method.sampling import LatentOffsetMapper, ProjectionPool
from gan2shape.method.trainer import Trainer, phases_of


def test_schedule_tables_match_the_original_configs():
    # gradient iterations per image of METHOD §1.3
    expected = {"car": 5300, "church": 5300, "celeba": 4600, "cat": 4600, "synface": 1200,
                "celeba_pretrain": 12600, "cat_pretrain": 12600, "synface_pretrain": 23400}
    for name, total in expected.items():
        assert schedule_iterations(SCHEDULES[name]) == total, name
    assert [s.flip3 for s in SCHEDULES["celeba"]] == [True, False, False, False]
    assert [s.flip1 for s in SCHEDULES["synface_pretrain"]] == [False] + [True] * 7
    # paper Table 2: step 1 only, 10 × (1,1,1)×8 rounds, (1,700,600), 3 × (200,500,400)
    init = init_iterations_schedule()
    assert len(init) == 15 and init[0] == Stage(700, 0, 0, rounds=0)
    assert schedule_iterations(init) == 700 + 10 * 8 * 2 + 10 + 1301 + 3 * 1100
    # about 170 iterations more than Table 1 (EXTENSIONS §2.4)
    assert schedule_iterations(init) - schedule_iterations(SCHEDULES["car"]) == 171


def test_phases_flatten_rounds_and_skip_empty_steps():
    ph = phases_of([Stage(2, 0, 0, rounds=0), Stage(1, 1, 1, rounds=2, flip3=True)], prior_iters=5)
    assert [(p.stage, p.round, p.step, p.n, p.flip) for p in ph] == [
        (-1, 0, 0, 5, False), (0, 0, 1, 2, False), (1, 0, 1, 1, False),
        (1, 0, 2, 1, False), (1, 0, 3, 1, True), (1, 1, 2, 1, False), (1, 1, 3, 1, True)]


def test_projection_pool_reads_like_the_original():
    pool = ProjectionPool()
    pool.start()
    ids = torch.arange(6.0)
    pool.add(ids.view(6, 1, 1, 1), torch.ones(6, 1, 1, 1), ids[:, None].expand(6, 6), -ids[:, None].expand(6, 4))
    pool.finish()
    g = torch.Generator().manual_seed(0)
    # the position advances before the first read: the first batch is [2, 4)
    assert pool.next_batch(2, g)[0].flatten().tolist() == [2.0, 3.0]
    assert pool.next_batch(2, g)[0].flatten().tolist() == [4.0, 5.0]
    # the next read would run past the end: reshuffle and restart at 0
    images, masks, views, lights = pool.next_batch(2, g)
    assert pool.pos == 0 and sorted(pool.images.flatten().tolist()) == [0, 1, 2, 3, 4, 5]
    assert images.flatten().tolist() == pool.images[:2].flatten().tolist()
    # each sample's pseudo view and light travel with it
    assert torch.equal(views, images.view(2, 1).expand(2, 6)) and torch.equal(lights, -images.view(2, 1).expand(2, 4))
    # the state round-trips with every field
    other = ProjectionPool()
    other.load_state_dict(pool.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.all(), pool.all())) and other.pos == pool.pos
    with pytest.raises(ValueError, match="disagree"):
        pool.add(ids.view(6, 1, 1, 1), torch.ones(6, 1, 1, 1), ids[:5, None], ids[:, None])


def test_latent_offset_mapper_f1d_semantics(model):
    g = model.G
    # F1_d = n_mlp: center_h is zero (PixelNorm of 0) and F is the whole mapping
    full = LatentOffsetMapper(g, g.n_mlp)
    assert torch.count_nonzero(full.center_h) == 0
    e = torch.randn(3, g.style_dim)
    assert torch.allclose(full(e), g.style(e) - g.style(torch.zeros(1, g.style_dim)), atol=1e-6)
    # F1_d = 2: three FC layers after the injection point; e = 0 gives Δw = 0
    m2 = LatentOffsetMapper(g, 2)
    assert m2.split == g.n_mlp - 2
    assert torch.allclose(m2(torch.zeros(1, g.style_dim)), torch.zeros(1, g.style_dim), atol=1e-6)


def test_step1_loss_falls_on_a_fixed_target(model):
    """30 step-1 iterations (A only) on one target lower the reconstruction loss."""
    t = tiny_target(model)
    t.gan_image = model.gan_image(t)
    opt = torch.optim.Adam(model.nets["netA"].parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        out = model.step1(t, grad_nets=("netA",))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        # step 1 trains A only: the other nets receive no gradient
        assert all(p.grad is None for k in ("netD", "netV", "netL") for p in model.nets[k].parameters())
    assert losses[-1] < 0.8 * losses[0], losses


def test_depth_prefit_approaches_the_prior(model):
    t = tiny_target(model)
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model.predict_depth(t.image, border=False), t.prior).item()
    r = fit_depth_to_prior(model, t.image, t.prior, iters=40)
    assert r["prior_iters"] == 40 and r["prior_mse"] < 0.5 * before
    # the early-stopping rule
    r = fit_depth_to_prior(model, t.image, t.prior, iters=1000, tol=1.0)
    assert r["prior_iters"] == 1


def _run(cfg, tmp_path=None, stop_after=None, ckpt_name="ck.pth"):
    model = tiny_model(cfg)
    trainer = Trainer(model, log_every=1)
    target = tiny_target(model)
    ckpt = None if tmp_path is None else tmp_path / ckpt_name
    res = trainer.fit(target, checkpoint=ckpt, checkpoint_every=4, stop_after=stop_after)
    return model, res


def _nets_equal(a, b):
    sa, sb = a.nets_state(), b.nets_state()
    return all(torch.equal(sa[n][k], sb[n][k]) for n in sa for k in sa[n])


def test_instance_fit_writes_all_outputs_and_logs():
    model, res = _run(tiny_config())
    assert not res.interrupted and res.iterations == 3 + 3 + 3 + 3  # pre-fit + 3 steps
    assert res.depth.shape == (1, 32, 32) and 0.9 <= res.depth.min() <= res.depth.max() <= 1.1
    assert res.albedo.shape == (1, 3, 32, 32) and res.view.shape == (1, 6) and res.light.shape == (1, 4)
    assert [e["step"] for e in res.log] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in res.log)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    cfg = tiny_config(schedule=[Stage(3, 3, 4, flip3=True), Stage(2, 2, 3)])
    ref_model, ref = _run(cfg)
    # iterations: pre-fit 1-3 | stage 0: s1 4-6, s2 7-9, s3 10-13 | stage 1: s1 14-15, s2 16-17, s3 18-20;
    # interrupted inside step 2, at the end of step 2 (before its collect), and inside step 3 of stage 1
    for stop in (8, 9, 19):
        ck = f"ck{stop}.pth"
        m1, r1 = _run(cfg, tmp_path, stop_after=stop, ckpt_name=ck)
        assert r1.interrupted and r1.iterations == stop and (tmp_path / ck).exists()
        m2, r2 = _run(cfg, tmp_path, ckpt_name=ck)
        assert not r2.interrupted and r2.iterations == ref.iterations
        assert _nets_equal(m2, ref_model), f"resume at {stop} differs"
        assert torch.equal(r2.depth, ref.depth)
        assert [e["loss"] for e in r2.log] == [e["loss"] for e in ref.log]


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, caplog):
    """Stale resume: a checkpoint made with another N_p / schedule, or on another image, is
    discarded with a log line saying why, and the run asked for is the one that runs."""
    cfg = tiny_config(schedule=[Stage(3, 3, 4)])
    _, r1 = _run(cfg, tmp_path, stop_after=5)
    assert r1.interrupted and (tmp_path / "ck.pth").exists()
    changed = tiny_config(schedule=[Stage(2, 2, 2)], n_p=3)
    ref_model, ref = _run(changed)
    with caplog.at_level("WARNING", logger="gan2shape"):
        m2, r2 = _run(changed, tmp_path)
    assert "another run" in caplog.text and "config" in caplog.text
    assert r2.iterations == ref.iterations == 3 + 6 and _nets_equal(m2, ref_model)
    # the same configuration on another image
    _run(cfg, tmp_path, stop_after=5)
    model = tiny_model(cfg)
    caplog.clear()
    with caplog.at_level("WARNING", logger="gan2shape"):
        res = Trainer(model).fit(tiny_target(model, "other", 7), checkpoint=tmp_path / "ck.pth")
    assert "inputs" in caplog.text and res.iterations == 3 + 10


def test_checkpoint_holds_what_resume_needs_and_not_the_frozen_gan(tmp_path):
    """A checkpoint stores the trainable nets, optimiser state, each image's state, random
    generators and the run's identity; never the frozen GAN, and the pools only while step 3
    still needs them."""
    cfg = tiny_config(schedule=[Stage(3, 3, 4)])
    for stop, pool_kept in ((5, False), (11, True)):  # inside step 1 | inside step 3
        model, _ = _run(cfg, tmp_path, stop_after=stop, ckpt_name=f"ck{stop}.pth")
        ck = torch.load(tmp_path / f"ck{stop}.pth", weights_only=True)
        assert set(ck) == {"identity", "cursor", "iteration", "names", "model", "optimizers", "persistent",
                           "targets", "rng", "torch_rng", "log", "elapsed"}
        assert set(ck["identity"]) == {"config", "independent", "mode", "pretrained_depth", "inputs"}
        assert ck["identity"]["mode"] == "faithful"
        nets = {k.split(".")[1] for k in ck["model"] if k.startswith("nets.")}
        assert nets == {"netD", "netA", "netV", "netL", "netEnc"}
        assert not any(k.startswith(("_frozen", "G.", "Dgan.")) for k in ck["model"])
        assert {k for k in ck["model"] if not k.startswith("nets.")} == {  # the five nets and small buffers
            "view_mean", "light_mean", "mapper.center_h", "mapper.center_w"}
        assert (ck["targets"][0]["pool"] is not None) == pool_kept


def test_reset_between_images_and_same_random_init():
    """Instance mode starts every image from the same snapshot (reset_weight)."""
    model = tiny_model(tiny_config())
    trainer = Trainer(model)
    snap = model.nets_state()
    trainer.fit(tiny_target(model, "a"))
    assert not _nets_equal_state(model.nets_state(), snap)
    trainer.reset()
    assert _nets_equal_state(model.nets_state(), snap)


def _nets_equal_state(sa, sb):
    return all(torch.equal(sa[n][k], sb[n][k]) for n in sa for k in sa[n])


def test_group_of_images_averages_losses():
    """A group shares one model; its step-1 gradient is the mean of the per-image gradients."""
    model = tiny_model(tiny_config())
    a, b = tiny_target(model, "a", 0), tiny_target(model, "b", 1)
    grads = []
    for ts in ([a], [b]):
        model.zero_grad()
        sum(model.step1(t).loss for t in ts).backward()
        grads.append(model.nets["netA"].network[0].weight.grad.clone())
    model.zero_grad()
    ((model.step1(a).loss + model.step1(b).loss) / 2).backward()
    assert torch.allclose(model.nets["netA"].network[0].weight.grad, (grads[0] + grads[1]) / 2, atol=1e-6)
    res = Trainer(model).fit([a, b])
    assert res.names == ["a", "b"] and res.depth.shape == (2, 32, 32)


def test_replication_switches_run():
    cfg = tiny_config(step3_pool="last_batch", optimizers="persistent", z_translation_range=0.1)
    _, res = _run(cfg)
    assert res.iterations == 12


def test_joint_pretraining_writes_an_official_pretrain_file(tmp_path):
    cfg = tiny_config(schedule=[Stage(2, 2, 2), Stage(2, 2, 2, flip1=True, flip3=True)], collect_iters=6)
    model = tiny_model(cfg)
    targets = [tiny_target(model, f"im{i}", i) for i in range(3)]
    res = fit_joint(Trainer(model), targets)
    assert res.iterations == 12 and res.depth.shape == (3, 32, 32)
    torch.save(pretrain_file(model, res), tmp_path / "pre.pth")
    sd = torch.load(tmp_path / "pre.pth", weights_only=True)
    assert {"netD", "netA", "netV", "netL", "netEnc"} <= set(sd) and sd["names"] == ["im0", "im1", "im2"]
    # loading it skips the ellipsoid pre-fit
    m2 = tiny_model(tiny_config())
    tr = Trainer(m2)
    assert set(tr.load_pretrain(tmp_path / "pre.pth")) == {"netD", "netA", "netV", "netL", "netEnc"}
    t = tiny_target(m2)
    t.prior = None
    r = tr.fit(t)
    assert r.iterations == 9 and all(e["step"] != 0 for e in r.log)


def test_a_pretrain_file_loads_only_into_nets_of_its_width(tmp_path):
    """A narrow pre-train (--net-width, the demo's) loads into a model of that width and nowhere else."""
    from gan2shape.io import CheckpointError

    narrow = tiny_model(tiny_config(net_width=0.5))
    assert narrow.nets["netD"].network[0].out_channels == 64      # 32 px: nf 128 x 0.5
    torch.save(narrow.nets_state(), tmp_path / "narrow.pth")
    with pytest.raises(CheckpointError, match=r"narrow\.pth: netD does not fit a 32-px network of width 1 "
                                              r"\(--image-size, --net-width\)"):
        Trainer(tiny_model(tiny_config())).load_pretrain(tmp_path / "narrow.pth")
    other = tiny_model(tiny_config(net_width=0.5), seed=3)
    assert len(Trainer(other).load_pretrain(tmp_path / "narrow.pth")) == 5
    assert all(torch.equal(a, b) for a, b in zip(other.nets.parameters(), narrow.nets.parameters()))


def test_a_stream_walks_a_new_random_permutation_every_pass():
    s = Stream(torch.Generator().manual_seed(5), [None] * 4)
    seen = []
    for _ in range(12):
        s.advance()
        seen.append(s.cur)
    g = torch.Generator().manual_seed(5)
    assert seen == [i for _ in range(3) for i in torch.randperm(4, generator=g).tolist()]
    assert all(sorted(seen[k:k + 4]) == [0, 1, 2, 3] for k in (0, 4, 8))


def _joint(cfg, tmp_path=None, ck="joint.pth", **kw):
    model = tiny_model(cfg)
    targets = [tiny_target(model, f"im{i}", i) for i in range(3)]
    res = fit_joint(Trainer(model, log_every=1), targets, checkpoint=None if tmp_path is None else tmp_path / ck,
                    checkpoint_every=4, **kw)
    return model, res


def test_joint_streams_train_their_images_together_each_with_its_own_order_and_pools(tmp_path):
    """P = 2 streams: every iteration trains both streams' current images; each stream's collect pass
    runs collect_iters forwards on its own images into its own pools; the canonical state is shared."""
    cfg = tiny_config(schedule=[Stage(2, 1, 2)], collect_iters=6, joint_streams=2)
    _, res = _joint(cfg, tmp_path, stop_after=3)   # stopped after step 2 and its collect: pools kept
    assert res.interrupted and res.iterations == 3
    assert [len(e["image"].split(",")) for e in res.log if e["step"] != 0] == [2, 2, 2]
    ck = torch.load(tmp_path / "joint.pth", weights_only=True)
    assert ck["cursor"] == [2, 0] and len(ck["targets"]) == 2 * 3 and len(ck["rng"]) == 2
    pools = [t["pool"]["images"] for t in ck["targets"]]
    for r in range(2):  # collect_iters forwards of N_p samples per stream, every image visited
        assert sum(len(p) for p in pools[3 * r:3 * r + 3]) == 6 * 2 and all(len(p) > 0 for p in pools[3 * r:3 * r + 3])
    assert not torch.equal(pools[0][:2], pools[3][:2])  # stream 1 drew its own samples of image 0
    for i in range(3):
        assert torch.equal(ck["targets"][i]["canonical"]["depth"], ck["targets"][3 + i]["canonical"]["depth"])
    assert [len(s["order"]) < 3 and 0 <= s["cur"] < 3 for s in ck["extra"]["streams"]] == [True, True]


def test_joint_resume_after_interruptions_equals_uninterrupted_run(tmp_path, caplog):
    """One run interrupted four times -- inside step 2, at the end of step 2 (before its collect),
    inside step 3 and inside the next stage's step 3 -- and resumed each time ends bit for bit like the
    uninterrupted run (P = 2 streams). A checkpoint of another P is not resumed."""
    cfg = tiny_config(schedule=[Stage(1, 2, 2), Stage(1, 1, 2, flip1=True, flip3=True)], collect_iters=6,
                      joint_streams=2)
    ref_model, ref = _joint(cfg)
    # iterations: stage 0: s1 1, s2 2-3, s3 4-5 | stage 1: s1 6, s2 7, s3 8-9
    for stop_after, reached, cursor in ((2, 2, [1, 1]), (1, 3, [2, 0]), (1, 4, [2, 1]), (4, 8, [5, 1])):
        _, r = _joint(cfg, tmp_path, stop_after=stop_after)
        ck = torch.load(tmp_path / "joint.pth", weights_only=True)
        assert r.interrupted and r.iterations == reached and ck["cursor"] == cursor
    m2, r2 = _joint(cfg, tmp_path)
    assert not r2.interrupted and r2.iterations == ref.iterations == 9
    assert _nets_equal(m2, ref_model)
    assert torch.equal(r2.depth, ref.depth) and r2.log == ref.log and r2.metrics == ref.metrics
    with caplog.at_level("WARNING", logger="gan2shape"):
        _, r3 = _joint(dataclasses.replace(cfg, joint_streams=1), tmp_path, stop_after=1)
    assert "another run" in caplog.text and "config" in caplog.text and r3.iterations == 1


def test_joint_result_metrics_are_those_of_the_last_stream_that_measured_the_image():
    """An image's result metrics come from the stream whose step-1/3 forward of it came last: a later
    step-2 visit by another stream (which measures nothing) does not hand the image to that stream."""
    cfg = tiny_config(schedule=[Stage(2, 2, 1)], collect_iters=8, joint_streams=2)
    model = tiny_model(cfg)
    targets = [tiny_target(model, f"im{i}", i) for i in range(4)]
    for t in targets:
        t.gt_depth = t.prior.clone()  # any ground truth: steps 1 and 3 measure the depth
    res = fit_joint(Trainer(model, log_every=1), targets)
    visits = [(e["step"], e["image"].split(",")) for e in res.log if e["step"] in (1, 2, 3)]
    measured = {name for step, names in visits if step in (1, 3) for name in names}
    # the draw this test relies on: an image measured by one stream, then visited in step 2 by the other
    assert any(step == 2 and names[r] in measured for step, names in visits for r in (0, 1))
    for name, m in zip(res.names, res.metrics):
        assert ("side" in m) == (name in measured), (name, visits, m)


def test_joint_pretraining_refuses_the_last_batch_pool():
    """step3_pool last_batch leaves every image a stream did not just visit in step 2 without a pool:
    joint pre-training says so up front instead of failing inside step 3."""
    cfg = tiny_config(schedule=[Stage(1, 1, 2)], collect_iters=8, joint_streams=2, step3_pool="last_batch")
    model = tiny_model(cfg)
    with pytest.raises(ValueError, match="step3_pool"):
        fit_joint(Trainer(model), [tiny_target(model, f"im{i}", i) for i in range(4)])


def test_generalized_trainer_checkpoints_every_epoch_and_resumes(tmp_path):
    cfg = tiny_config()
    gcfg = GeneralizedConfig(epochs=2, batch_size=2, stage=(1, 1, 1), init_epochs=1, init_stage=(1, 1, 1),
                             init_rounds=2, prior_epochs=2, save_every=2)
    model = tiny_model(cfg)
    targets = [tiny_target(model, f"im{i}", i) for i in range(3)]
    res = fit_generalized(Trainer(model, log_every=1), targets, gcfg, checkpoint_dir=tmp_path)
    # epochs: 1 init epoch (rounds 2) + 2 regular; the last epoch is always saved (bug 3 fixed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0002.pth", "epoch_0003.pth"]
    per_batch = lambda n_img, rounds: 1 + n_img * rounds * 2  # noqa: E731
    assert res.iterations == sum(per_batch(2, r) + per_batch(1, r) for r in (2, 1, 1))
    # resuming from the last checkpoint runs nothing more
    m2 = tiny_model(cfg)
    r2 = fit_generalized(Trainer(m2), [tiny_target(m2, f"im{i}", i) for i in range(3)], gcfg, checkpoint_dir=tmp_path)
    assert r2.iterations == res.iterations and _nets_equal(m2, model)


def test_pseudo_projection_oracle_gives_step3_the_pseudo_samples():
    """Diagnostic mode: the collected pool holds the pseudo samples, not GAN outputs."""
    cfg = tiny_config(projection="pseudo")
    model = install_projection(tiny_model(cfg))
    t = tiny_target(model)
    t.gan_image = model.gan_image(t)
    out = model.step1(t)
    from gan2shape.method.sampling import CanonicalState

    st = CanonicalState(out.depth[:1], out.albedo[:1], out.normals[:1], out.k_a[:1], out.k_d[:1]).detach()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    _, _, proj, _ = model.step2(t, st, g1)
    pseudo, _ = model.pseudo_samples(st, cfg.n_p, g2)
    assert torch.equal(proj, pseudo)


def test_oracle_projection_renders_the_ground_truth_scene_like_the_pseudo_samples():
    """Diagnostic mode 'oracle': with the identity pseudo view and the scene's own light (strength 0)
    the projected sample is the test render itself; with a pseudo view it is the ground truth warped
    as the method warps the canonical (= input-view) depth; step 2 hands step 3 such renders."""
    from gan2shape.world import render_batch, sample_params

    cfg = tiny_config(projection="oracle", image_size=32)
    model = install_projection(tiny_model(cfg))
    scene = sample_params("face", 1, seed=3)[0]
    truth = render_batch([scene], size=cfg.image_size)
    t = tiny_target(model)
    t.scene = scene
    direction = torch.nn.functional.normalize(torch.tensor([[scene.lx, scene.ly, 1.0]]), dim=1)
    same = mesh_oracle_samples(model, t, torch.zeros(1, 6), direction, torch.zeros(1))
    assert torch.allclose(same, truth["image"], atol=1e-4)
    brighter = mesh_oracle_samples(model, t, torch.zeros(1, 6), direction, torch.full((1,), 0.5))
    assert (brighter - truth["image"]).abs().max() > 0.1
    # a box re-viewed by 15° yaw and a shift: the oracle's depth is the ground truth warped by the
    # method's renderer (up to the renderer's own sub-pixel error, seen in the identity warp)
    box = sample_params("box", 1, seed=3)[0]
    box_truth = render_batch([box], size=cfg.image_size)["depth"]
    raw = torch.tensor([[0.0, 0.25, 0.0, 0.5, 0.0, 0.0]])
    view = view_to_physical(raw, cfg.xyz_rotation_range, cfg.xy_translation_range, cfg.z_translation_range)
    warped = render_batch([box], size=cfg.image_size, warp=view)["depth"]
    method = model.renderer.warp_canon_depth(box_truth, view)
    inside = (warped < 1.05) & (method < 1.05)
    inside = torch.nn.functional.avg_pool2d(inside[:, None].float(), 3, 1, 1)[:, 0] > 0.99
    assert inside.sum() > 100
    err, moved = (warped - method)[inside].abs().median(), (warped - box_truth)[inside].abs().median()
    assert err < 2e-3 and moved > 10 * err, (err, moved)
    # the pseudo light is attached to the input-view frame, like the pseudo samples' shading
    scene0 = dataclasses.replace(scene, lx=0.0, ly=0.0)
    warped = render_batch([scene0], size=cfg.image_size, warp=view)
    light0 = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(mesh_oracle_samples(model, dataclasses.replace(t, scene=scene0), raw, light0, torch.zeros(1)),
                          warped["image"], atol=1e-5)
    # step 2 returns oracle renders, of the batch size, and refuses a target without a scene
    t.gan_image = model.gan_image(t)
    out = model.step1(t)
    from gan2shape.method.sampling import CanonicalState

    st = CanonicalState(out.depth[:1], out.albedo[:1], out.normals[:1], out.k_a[:1], out.k_d[:1]).detach()
    _, _, proj, _ = model.step2(t, st, torch.Generator().manual_seed(1))
    assert proj.shape == (cfg.n_p, 3, cfg.image_size, cfg.image_size)
    assert not torch.equal(proj, model.pseudo_samples(st, cfg.n_p, torch.Generator().manual_seed(1))[0])
    t.scene = None
    with pytest.raises(ValueError, match="scene"):
        model.step2(t, st, torch.Generator().manual_seed(1))


def test_stacked_pseudo_samples_equal_each_image_alone():
    """render_pseudo_samples on K stacked canonical states = K separate calls (own k_a, k_d, mask)."""
    from gan2shape.method.sampling import CanonicalState, render_pseudo_samples

    cfg = tiny_config()
    model = tiny_model(cfg)
    g = torch.Generator().manual_seed(7)
    S, n = cfg.image_size, 3
    depth = 0.95 + 0.1 * torch.rand(2, S, S, generator=g)
    states = [CanonicalState(depth[i:i + 1], torch.rand(1, 3, S, S, generator=g) * 2 - 1,
                             model.renderer.normals(depth[i:i + 1]), torch.rand(1, generator=g),
                             torch.rand(1, generator=g), (torch.rand(1, 1, S, S, generator=g) > 0.3).float())
              for i in range(2)]
    stacked = CanonicalState(*(torch.cat([getattr(s, f) for s in states]) for f in
                               ("depth", "albedo", "normals", "k_a", "k_d", "canon_mask")))
    views = torch.randn(2 * n, 6, generator=g) * 0.3
    direction = torch.nn.functional.normalize(torch.randn(2 * n, 3, generator=g), dim=1)
    strength = torch.rand(2 * n, generator=g)
    both = render_pseudo_samples(model.renderer, stacked, views, direction, strength, 0.5)
    for i, st in enumerate(states):
        sl = slice(i * n, (i + 1) * n)
        one = render_pseudo_samples(model.renderer, st, views[sl], direction[sl], strength[sl], 0.5)
        assert torch.allclose(both[0][sl], one[0], atol=1e-6) and torch.equal(both[1][sl], one[1])
    with pytest.raises(ValueError, match="split evenly"):
        render_pseudo_samples(model.renderer, stacked, views[:5], direction[:5], strength[:5], 0.5)


def test_radam_option_avoids_the_fresh_adam_sign_step():
    """A fresh Adam moves every weight by ~lr on its first update however small the gradient (the
    jolt that erases a pre-fitted depth); RAdam's first update is proportional to the gradient."""
    from gan2shape.method.config import MethodConfig
    from gan2shape.method.optim import make_optimizer

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    w_true = torch.randn(8, 1)
    y = x @ w_true
    moves = {}
    for name in ("adam", "radam"):
        w = torch.nn.Parameter(w_true + 1e-6 * torch.randn(8, 1))  # at the minimum, up to 1e-6
        opt = make_optimizer([w], MethodConfig(optimizer=name, weight_decay=0.0))
        assert isinstance(opt, torch.optim.RAdam if name == "radam" else torch.optim.Adam)
        (x @ w - y).pow(2).mean().backward()
        before = w.detach().clone()
        opt.step()
        moves[name] = (w.detach() - before).abs().max().item()
    assert moves["adam"] == pytest.approx(1e-4, rel=1e-2)  # lr·sign(g)
    assert moves["radam"] < 1e-8
    with pytest.raises(ValueError, match="optimizer"):
        MethodConfig(optimizer="sgd")


def test_depth_lr_step3_gives_the_depth_net_its_own_step3_rate():
    """--depth-lr-step3: netD's step-3 optimiser (or param group, persistent mode) gets the option's
    lr; every other net and step keeps lr."""
    cfg = tiny_config(depth_lr_step3=1e-5)
    trainer = Trainer(tiny_model(cfg))
    whole = trainer.group([tiny_target(trainer.model)])
    step3 = trainer.optimizers(3, whole, None)
    assert {k: o.param_groups[0]["lr"] for k, o in step3.items()} == {
        "netD": 1e-5, "netA": cfg.lr, "netV": cfg.lr, "netL": cfg.lr}
    assert trainer.optimizers(0, whole, None)["netD"].param_groups[0]["lr"] == cfg.lr  # the pre-fit keeps lr
    groups = trainer.optimizers(3, whole, {})["all"].param_groups
    assert [g["lr"] for g in groups] == [1e-5, cfg.lr, cfg.lr, cfg.lr]
    with pytest.raises(ValueError, match="depth_lr_step3"):
        tiny_config(depth_lr_step3=-1.0)

"""World v2: canonical maps rendered by the method's renderer, model-consistency, coverage, oracle."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gan2shape import world as sy
from gan2shape.method.networks import clamp_border, depth_head
from gan2shape.world import consistency as C
from gan2shape.world import v2

S = 32


@pytest.fixture(scope="module")
def viewlight():
    return sy.viewlight_moments(sy.V2_FAMILIES, 3000, 0)


def test_v2_params_deterministic_and_v1_unchanged():
    for fam in sy.V2_FAMILIES:
        a = sy.sample_params(fam, 30, 5)
        assert a == sy.sample_params(fam, 30, 5) and sy.sample_params(fam, 3, 5) == a[:3]
        for p in a:
            assert abs(p.yaw) <= 45 and abs(p.pitch) <= 18 and abs(p.roll) <= 6
            assert abs(p.tx) <= 0.009 and abs(p.ty) <= 0.009
            # held-out lights: base strengths, directions in the union of the presets' rand_light
            assert 0.4 <= p.k_a <= 0.6 and 0.3 <= p.k_d <= 0.6
            assert -1 <= p.lx <= 1 and -0.3 <= p.ly <= 0.8
            assert sy.SceneParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    # v1 scenes are still drawn exactly as before (pinned)
    p = sy.sample_params("face", 1, 0)[0]
    assert p.family == "face" and abs(p.yaw) <= 40 and -0.5 <= p.background <= 0.5
    with pytest.raises(ValueError, match="one world"):
        sy.stream_params(("face", "car2"), 2, 0, 0)
    with pytest.raises(ValueError, match="one world"):
        sy.render_batch(sy.sample_params("face", 1, 0) + sy.sample_params("face2", 1, 0), 16)


def test_canonical_maps_symmetric_and_representable():
    for fam in sy.V2_FAMILIES:
        ps = sy.sample_params(fam, 4, 1)
        cm = v2.canonical_maps(ps, S)
        d = cm["depth"]
        # exactly the depth head's output of `raw` (mean-centred) after the border clamp
        again = clamp_border(depth_head(cm["raw"].double()), min_depth=0.9, max_depth=1.1)
        assert (again.float() - d).abs().max() < 1e-5
        assert cm["raw"].mean((1, 2)).abs().max() < 1e-5
        assert d.min() > 0.9 and d.max() < 1.1
        # the background is one fronto-parallel plane; the object is in front of it
        bg = cm["background"].view(-1, 1, 1)
        inner = d[:, :, 2:-2]
        m = cm["mask"][:, 0, :, 2:-2] > 0
        assert torch.allclose(inner[~m], bg.expand_as(inner)[~m], atol=1e-5)
        assert (inner[m] < bg.expand_as(inner)[m] + 1e-6).all()
        cover = cm["mask"].mean().item()
        assert (0.7 < cover < 0.85) if fam == "face2" else (0.15 < cover < 0.4), (fam, cover)
        if fam == "face2":  # mirror-symmetric depth and albedo, exactly
            assert torch.equal(d, d.flip(2)) and torch.equal(cm["albedo"], cm["albedo"].flip(3))
        else:
            assert not torch.equal(cm["albedo"], cm["albedo"].flip(3))


def test_model_consistency_exact_and_after_png_round_trip(tmp_path, viewlight):
    """(a) step-1 render at the truth = input, (b) the flip branch too (face2), (c) the method's
    pseudo sample of the truth = the world's render of that view and light."""
    for fam in sy.V2_FAMILIES:
        ps = sy.sample_params(fam, 2, 2)
        r = sy.render_batch(ps, S)
        rows = C.check_scenes(ps, r["image"], viewlight, n_pseudo=3)
        for row in rows:
            assert row["step1_l1"] < 1e-5 and row["pseudo_l1"] < 1e-5, row
            assert row.get("flip_l1", 0.0) < 1e-5 and row["valid_share"] > 0.7
        assert ("flip_l1" in rows[0]) == (fam == "face2")
        # the committed format: 8-bit images cost at most half a grey level on average
        sy.save_test_set(tmp_path, fam, 2, 2, size=S)
        recs = sy.load_test_set(tmp_path / fam)
        assert recs[0]["meta"]["format_version"] == 2
        assert (recs[0]["canon_depth"] - r["canon_depth"][0]).abs().max() < 1e-5
        assert (recs[0]["albedo"] - r["albedo"][0]).abs().max() <= 1 / 255 + 1e-6
        imgs = torch.stack([rec["image"] for rec in recs])
        for row in C.check_scenes(ps, imgs, viewlight, n_pseudo=1):
            assert row["step1_l1"] <= 0.01 and row.get("flip_l1", 0.0) <= 0.02, row
        assert torch.equal(recs[1]["depth"] < 1.1, r["mask"][1, 0] > 0.5)


def test_pseudo_samples_inside_the_gan_training_support(viewlight):
    for fam in sy.V2_FAMILIES:
        cov = C.coverage(fam, sy.sample_params(fam, 8, 0), viewlight, n_per_image=128)
        assert cov["outside_light"] == 0.0 and cov["outside_any"] <= 0.05, cov
    # the MVN is the generating distribution in the canonical frame: mean 0, yaw σ ≈ 15°
    assert viewlight.view.mean[:5].abs().max() < 0.02
    yaw_sd = math.degrees(float(viewlight.view.cov[1, 1].sqrt()) * math.radians(60))
    assert 13.5 < yaw_sd < 16.0, yaw_sd
    # stream lights: every one inside the support; half relit beyond the held-out strengths
    st = sy.stream_params(sy.V2_FAMILIES, 200, 0, 0)
    for fam in sy.V2_FAMILIES:
        ps = [p for p in st if p.family == fam]
        ka, kd = torch.tensor([p.k_a for p in ps]), torch.tensor([p.k_d for p in ps])
        d = torch.nn.functional.normalize(torch.tensor([[p.lx, p.ly, 1.0] for p in ps]), dim=1)
        assert v2.light_in_support(fam, ka, kd, d).all()
        assert 0.2 < float((kd > 0.6).float().mean()) < 0.5


def test_training_stream_v2_and_gan_source():
    from gan2shape.gan.train_gan import _synthetic_source

    kw = dict(families=sy.V2_FAMILIES, size=16, batch=3, seed=2, device="cpu")
    a, b = sy.TrainingStream(**kw).next(), sy.TrainingStream(**kw).next()
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1
    src = _synthetic_source(list(sy.V2_FAMILIES), 16, 4, 0, "cpu", pool=8)
    assert src().shape == (4, 3, 16, 16)


def test_self_consistent_oracle_minimises_step3_at_the_truth():
    """The oracle's samples are the world's renders of the pseudo views / lights, and the step-3
    render of the truth with the true pseudo view and light reproduces them."""
    from conftest import tiny_config, tiny_model, tiny_target

    from gan2shape.diagnostics import canonical_truth, consistent_oracle_samples, install_projection
    from gan2shape.method.renderer import compose_texture, light_to_physical, shade
    from gan2shape.method.sampling import pseudo_lights, sample_lights, sample_views

    cfg = tiny_config(projection="oracle", image_size=S)
    model = install_projection(tiny_model(cfg))
    scene = sy.sample_params("face2", 1, 4)[0]
    t = tiny_target(model)
    t.scene = scene
    g = torch.Generator().manual_seed(3)
    raw_views = sample_views(model.viewlight, 3, 1.0, g)
    ldir, lr = sample_lights(3, cfg.rand_light, g)
    oracle = consistent_oracle_samples(model, t, raw_views, ldir, lr)
    rv, rl = raw_views, pseudo_lights(ldir, lr, scene.k_a, scene.k_d, cfg.rand_light[6])  # the true V(Q), L(Q)
    world = v2.render_v2([scene] * 3, S, views=model.physical_view(rv), lights=rl)
    assert (oracle - world["image"]).abs().max() < 1e-5
    # step 3's render (METHOD §4.6) of the truth with the true V(Q), L(Q)
    tr = canonical_truth(scene, S)
    k_a, k_d, direction = light_to_physical(rl)
    shading, _ = shade(tr["normals"].expand(3, -1, -1, -1), k_a, k_d, direction)
    recon, _, valid = model.renderer.render(compose_texture(tr["albedo"].expand(3, -1, -1, -1), shading),
                                            tr["depth"].expand(3, -1, -1), model.physical_view(rv))
    assert ((recon - oracle).abs() * valid).max() < 1e-5 and valid.mean() > 0.7
    # step 2 hands step 3 these renders; a target without a scene is refused
    out = model.step1(t)
    from gan2shape.method.sampling import CanonicalState

    st = CanonicalState(out.depth[:1], out.albedo[:1], out.normals[:1], out.k_a[:1], out.k_d[:1]).detach()
    t.gan_image = model.gan_image(t)
    _, _, proj, _ = model.step2(t, st, torch.Generator().manual_seed(1))
    pseudo, _, rv2, ld2, lr2 = model.pseudo_samples(st, cfg.n_p, torch.Generator().manual_seed(1), True)
    assert torch.allclose(proj, consistent_oracle_samples(model, t, rv2, ld2, lr2), atol=1e-6)
    t.scene = None
    with pytest.raises(ValueError, match="scene"):
        model.step2(t, st, torch.Generator().manual_seed(1))

# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Style transfer, and posterior style transfer
#
# Gatys et al. (2016) stylize a content photo $x_c$ with a style image $x_s$ by minimizing
#
# $$E(x) = \alpha\,\frac{\lVert F(x) - F(x_c)\rVert^2}{\lVert F(x_c)\rVert^2}
#   + \beta \sum_\ell w_\ell
#     \frac{\lVert G_\ell(x) - G_\ell(x_s)\rVert^2}{\lVert G_\ell(x_s)\rVert^2}
#   + \gamma\,\overline{|\nabla x|}$$
#
# with $F$ the VGG19 features at `relu4_2`, $G_\ell = F_\ell F_\ell^\top / (C_\ell H_\ell W_\ell)$
# the Gram matrices at `relu1_1` ... `relu5_1` and $\sum_\ell w_\ell = 1$. Every term is a
# relative error, so the weights mean the same at every size. Optimizing is the zero-noise case
# of the sampler; **posterior style transfer** samples $\pi(x) \propto \exp(-d\,E(x)/T)$
# ($d$ = number of pixel values) with MALA instead, and gives several stylizations of one pair.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch

from langevin_images.apps.style import style_diversity, style_energy, transfer
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.diagnostics import diagnose
from langevin_images.diagnostics.plots import image_grid
from langevin_images.models import fast_bfloat16, load_model

tune_malloc()

SMALL = os.environ.get("LANGEVIN_IMAGES_SMALL") == "1"
SIZE, STEPS = (40, 8) if SMALL else (128, 150)
CHAINS, DRAWS, WARMUP = (2, 5, 5) if SMALL else (4, 150, 150)

vgg = load_model("vgg19")
content, style = load_photo("chelsea", SIZE), load_photo("ihc", SIZE)


def show(images, title="", scale=3.0):
    plt.figure(figsize=(scale * images.shape[1] * 1.5, scale * images.shape[0]))
    plt.imshow(image_grid(images.detach().numpy()))
    plt.axis("off")
    plt.title(title)


show(torch.stack([content[0], torch.nn.functional.interpolate(style, content.shape[-2:])[0]])[None],
     "content, style")  # fmt: skip

# %% [markdown]
# ## Normalized units
#
# The energy of the content photo, where only the style term is not 0, at two sizes: about the
# same number, because each term is a relative error.

# %%
for side in (SIZE // 2, SIZE):
    c, s = load_photo("chelsea", side), load_photo("ihc", side)
    print(side, "px:", {k: round(float(v), 3) for k, v in style_energy(vgg, c, s).terms(c).items()})

# %% [markdown]
# ## Three optimizers, the same number of energy+gradient evaluations
#
# L-BFGS (Gatys et al.; unit steps, the image clamped to [0, 1] before each evaluation), Adam
# (projected on [0, 1]) and the sampler's descent (step normalized by the mean gradient). Where
# bfloat16 is fast (`fast_bfloat16()`: an AMX CPU or a recent GPU), L-BFGS again with
# `precision="mixed"`: VGG19 in bfloat16 for the first 9/10 of the evaluations, float32 after
# (the dashed line). Its bfloat16 energies are the bfloat16 network's, so only the float32 ones
# after the switch compare with the others.

# %%
runs = [("lbfgs", "float32"), ("adam", "float32"), ("descent", "float32")]
if fast_bfloat16():
    runs.append(("lbfgs", "mixed"))
results = {}
for optimizer, precision in runs:
    name = optimizer if precision == "float32" else f"{optimizer}, {precision}"
    t = time.perf_counter()
    results[name] = transfer(content, style, model=vgg, optimizer=optimizer, steps=STEPS,
                             precision=precision, progress=False)  # fmt: skip
    with torch.no_grad():
        final = float(style_energy(vgg, content, style)(results[name].images))
    print(f"{name:14s} energy of the result {final:.4f} in {time.perf_counter() - t:.1f} s")

plt.figure(figsize=(6, 3.5))
for name, r in results.items():
    plt.plot([h["energy"] for h in r.history], label=name)
    switch = [i for i, h in enumerate(r.history) if h["precision"] == "float32"]
    if switch and switch[0] > 0:
        plt.axvline(switch[0], color="0.5", ls="--", lw=0.8)
plt.yscale("log")
plt.xlabel("energy+gradient evaluation")
plt.ylabel("energy")
plt.legend()
show(torch.stack([r.images[0] for r in results.values()])[None], ", ".join(results))

# %% [markdown]
# ## Coarse to fine, blended styles, colour preservation, a mask

# %%
mask = torch.zeros(1, 1, *content.shape[-2:])
mask[..., content.shape[-1] // 2 :] = 1  # the right half
variants = {
    "3 scales": dict(scales=3, steps=STEPS // 2),
    "ihc + hubble": dict(styles=[style, load_photo("hubble", SIZE)], style_weights=[1, 1]),
    "luminance only": dict(preserve_color="luminance"),
    "content's colours": dict(preserve_color="histogram"),
    "right half": dict(mask=mask),
}
images = []
for kw in variants.values():
    kw = {"steps": STEPS, **kw}
    styles = kw.pop("styles", style)
    images.append(transfer(content, styles, model=vgg, progress=False, **kw).images[0])
show(torch.stack(images)[None], " | ".join(variants))

# %% [markdown]
# ## Posterior style transfer
#
# MALA at $T$ (in units of $E$: a sample's excess energy over the minimum is about $T/2$),
# preconditioned by colour x 1/f, on [0, 1] exactly, started from the L-BFGS result with
# the step size adapted to acceptance 0.574 during warmup.

# %%
post = transfer(content, style, model=vgg, method="posterior", temperature=0.03, chains=CHAINS,
                steps=STEPS, sample_steps=DRAWS, warmup=WARMUP, progress=False)  # fmt: skip
show(torch.cat([results["lbfgs"].images, post.images])[None], "T = 0 | posterior chains")
run = post.posterior
print("acceptance", round(float(run.acceptance_rate.mean()), 3))
print({k: round(v, 4) for k, v in style_diversity(vgg, post.images).items()})
print(diagnose(run.to_datatree(projections=4)))

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
# # Amortized style transfer: one pair through Gatys, posterior, Johnson, CIN and AdaIN
#
# Gatys et al. optimize every image anew; the amortized kinds train a network once to predict
# the optimization's result and then stylize in one forward pass:
#
# - **Johnson et al. (2016)**: one feed-forward network per style, trained on the Gatys energy;
# - **conditional instance norm** (Dumoulin et al. 2017): one network, a $(\gamma_s, \beta_s)$
#   per style in every instance norm, styles mixed by mixing $\gamma, \beta$;
# - **AdaIN** (Huang & Belongie 2017): VGG19 to `relu4_1`, the content's channel statistics
#   replaced by the style's, $\mathrm{AdaIN}(x, y) = \sigma(y)\,(x - \mu(x))/\sigma(x) + \mu(y)$,
#   and a trained decoder: any style image, no training per style.
#
# The networks here are the project's own, trained on the CPU for a few hundred steps
# (`langevin-images train-style`, commands in their model cards): far from the papers' 40 000+
# steps, so expect their gap to Gatys to be larger than the papers'. The energy column is the
# one Gatys minimizes, so it measures that gap.

# %%
import os
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from langevin_images.apps.amortized import stylize
from langevin_images.apps.style import style_energy, transfer
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.diagnostics.plots import image_grid
from langevin_images.models import load_model
from langevin_images.models.stylenets import load_network

tune_malloc()

SMALL = os.environ.get("LANGEVIN_IMAGES_SMALL") == "1"
SIZE, STEPS = (48, 10) if SMALL else (128, 300)
CHAINS, DRAWS, WARMUP = (2, 4, 4) if SMALL else (4, 100, 100)

vgg = load_model("vgg19")
content, style = load_photo("chelsea", SIZE), load_photo("ihc", SIZE)
energy = style_energy(vgg, content, style)
johnson, _, johnson_card = load_network("johnson-ihc")
cin, _, _ = load_network("cin-3")
adain_net, _, _ = load_network("adain", encoder=vgg)


def gatys_energy(y):
    with torch.no_grad():
        return float(energy(y).sum())


def timed(fn, repeats=3):
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return out, (time.perf_counter() - t) / repeats


# %% [markdown]
# ## The five methods on one pair

# %%
results = {}
t = time.perf_counter()
g = transfer(content, style, model=vgg, steps=STEPS, progress=False)
results["gatys (L-BFGS)"] = (g.images, time.perf_counter() - t)
t = time.perf_counter()
p = transfer(content, style, model=vgg, method="posterior", steps=STEPS, temperature=0.3,
             chains=CHAINS, sample_steps=DRAWS, warmup=WARMUP, progress=False)  # fmt: skip
results["posterior, chain 0 (T = 0.3)"] = (p.images[:1], time.perf_counter() - t)
results["johnson"] = timed(lambda: stylize(johnson, content))
results["cin (style ihc)"] = timed(lambda: stylize(cin, content, style="ihc"))
results["adain"] = timed(lambda: stylize(adain_net, content, styles=[style]))

table = pd.DataFrame(
    [{"method": k, "seconds": s, "gatys energy": gatys_energy(y)} for k, (y, s) in results.items()]
)
table["x faster than gatys"] = table["seconds"].iloc[0] / table["seconds"]
table.loc[len(table)] = ["content itself", 0.0, gatys_energy(content), float("nan")]
table

# %%
h, w = content.shape[-2:]
style_tile = load_photo("ihc", max(h, w))[..., :h, :w]  # a crop of the style, to tile it
tiles = torch.cat([content, style_tile, *[y for y, _ in results.values()]])
plt.figure(figsize=(16, 3))
plt.imshow(image_grid(tiles[None].numpy()))
plt.axis("off")
plt.title("content, style, " + ", ".join(results))

# %% [markdown]
# ## Mixing styles: CIN interpolates $\gamma, \beta$; AdaIN interpolates its targets
#
# Weight 1 on one style is that style exactly; in between, the norms use the mixed parameters.

# %%
hubble = load_photo("hubble", SIZE)
weights = [0.0, 0.25, 0.5, 0.75, 1.0]
cin_mix = [stylize(cin, content, style={"ihc": 1 - w, "hubble": w}) for w in weights]
ada_mix = [stylize(adain_net, content, styles=[style, hubble], style_weights=[1 - w, w])
           for w in weights]  # fmt: skip
plt.figure(figsize=(14, 5))
plt.imshow(image_grid(torch.stack([torch.cat(cin_mix), torch.cat(ada_mix)]).numpy()))
plt.axis("off")
plt.title("ihc to hubble; top: CIN, bottom: AdaIN")

# %% [markdown]
# ## AdaIN's strength and colour preservation
#
# `alpha` moves the decoder's input from the content's own features (0) to the full AdaIN
# transfer (1). Colour preservation recolours the style image with the content's colour mean
# and covariance before encoding it (`histogram`), or keeps the content's chroma (`luminance`).

# %%
alphas = [0.0, 0.33, 0.66, 1.0]
row1 = [stylize(adain_net, content, styles=[hubble], alpha=a) for a in alphas]
row2 = [stylize(adain_net, content, styles=[hubble], preserve_color=c) for c in
        (None, "histogram", "luminance", None)]  # fmt: skip
plt.figure(figsize=(12, 5))
plt.imshow(image_grid(torch.stack([torch.cat(row1), torch.cat(row2)]).numpy()))
plt.axis("off")
plt.title("top: alpha 0, 0.33, 0.66, 1; bottom: as is, histogram, luminance, as is")

# %% [markdown]
# ## The imported 26-style network
#
# `multistyle26` is the TensorFlow stylize demo's CIN network, read from its ONNX file into this
# project's module (it agrees with onnxruntime to 1e-4). Its style images were never published
# with it, so its styles are indices.

# %%
ms, _, _ = load_network("multistyle26")
picks = [stylize(ms, content, style=k) for k in (0, 5, 13, 19)]
picks.append(stylize(ms, content, style={5: 0.5, 19: 0.5}))
plt.figure(figsize=(14, 3))
plt.imshow(image_grid(torch.cat(picks)[None].numpy()))
plt.axis("off")
plt.title("multistyle26 styles 0, 5, 13, 19 and half 5 + half 19")

# %% [markdown]
# The Johnson network's model card: how it was trained, and where its loss ended.

# %%
{k: johnson_card["training"][k] for k in ("steps", "batch", "size", "final_losses")}

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
# # DeepDream
#
# DeepDream starts from a photo and descends $E(x) = -\tfrac12 \lVert a_\ell(x) \rVert^2$, minus the
# squared activations of a layer: whatever the layer half-sees in the photo, it amplifies. The
# recipe of the original google/deepdream notebook, as implemented here on the sampler's
# zero-noise path:
#
# - an image pyramid of 4 **octaves**, each 1.4 times smaller; dreaming starts at the smallest
#   and the **detail** added at one octave is carried, upsampled, to the next;
# - a random **roll** of the image (jitter) at every step;
# - each step **normalized** by the mean gradient magnitude, 1.5/255 per step.
#
# At $T > 0$ each octave is an unadjusted Langevin run instead, and several chains give several
# different dreams of the same photo.

# %%
import os

import matplotlib.pyplot as plt
import torch

from langevin_images.apps import dream
from langevin_images.cpu import tune_malloc
from langevin_images.datasets import load_photo
from langevin_images.diagnostics import mean_pairwise_distance
from langevin_images.diagnostics.plots import image_grid
from langevin_images.models import load_model

tune_malloc()  # PyTorch's activations stay in the heap: 1.3-1.5x faster CPU steps

SMALL = os.environ.get("LANGEVIN_IMAGES_SMALL") == "1"
SIZE, STEPS = (128, 3) if SMALL else (192, 20)

model = load_model("lite0")
photo = load_photo("chelsea", SIZE)


def show(images, title=""):
    plt.figure(figsize=(4 * images.shape[1], 3 * images.shape[0]))
    plt.imshow(image_grid(images.numpy()))
    plt.axis("off")
    plt.title(title)


# %% [markdown]
# ## Layers: what each one amplifies
#
# An early block strengthens edges and fine texture; a middle one adds eyes, swirls and fur-like
# motifs; a late one arranges larger, object-like patterns.

# %%
layers = ["_blocks.4", "_blocks.9", "_blocks.14"]
dreams = {
    layer: dream(model, photo, layer, steps_per_octave=STEPS, progress=False) for layer in layers
}
show(torch.stack([photo[0], *[d.images[0] for d in dreams.values()]])[None],
     "photo, then " + ", ".join(layers))  # fmt: skip

# %% [markdown]
# ## The octaves
#
# The sizes of the pyramid, smallest first. Each octave's run is a recorded run of the sampler.

# %%
d = dreams["_blocks.9"]
for size, run in zip(d.sizes, d.runs, strict=True):
    e = run.stats["energy"][0]
    print(f"octave {size}: energy {float(e[0]):9.2f} -> {float(e[-1]):9.2f}")

# %% [markdown]
# ## A guided dream
#
# With a guide image, each position's features are matched with the guide's most similar
# features instead of amplified: the photo takes on motifs of the guide.

# %%
guide = load_photo("coffee", SIZE)
guided = dream(model, photo, "_blocks.9", guide=guide, steps_per_octave=STEPS, progress=False)
show(guided.images[None], "chelsea guided by coffee")

# %% [markdown]
# ## Stochastic dreams (T > 0)
#
# Four chains at $T = 0.005$ dream the same photo differently; their mean pairwise distance
# measures how different.

# %%
stochastic = dream(model, photo, "_blocks.9", steps_per_octave=STEPS, temperature=0.005, chains=4,
                   progress=False)  # fmt: skip
show(stochastic.images[None], "four dreams at T = 0.005")
print("mean pairwise L2 between dreams:", round(mean_pairwise_distance(stochastic.images), 2))
print("deterministic dream vs photo L2:", round(float((d.images - photo).norm()), 2))

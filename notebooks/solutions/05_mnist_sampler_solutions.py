# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions · 05 · Steering an MNIST flow model to a digit
#
# Worked solutions to the exercises of `../05_mnist_sampler.ipynb`: try them there first. Every check below passes.

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/05_mnist_sampler_solutions.ipynb`.
#
# 1. Accuracy with a standard error
# 2. How many images for an error bar?
# 3. $\hat x_0$ of images
# 4. A count-like reward
# 5. Diversity

# %%
import math

import torch

from toyflow import exercises


# %% [markdown]
# ### Exercise 1 · Accuracy with a standard error
#
# Write `my_accuracy(correct)` for a (n,) bool tensor: the accuracy $p$ and its binomial standard
# error $\sqrt{p(1-p)/n}$, the error bars of the table above.

# %%
def my_accuracy(correct):
    p = correct.double().mean()
    return p, torch.sqrt(p * (1 - p) / len(correct))


exercises.check_accuracy_with_error(my_accuracy)


# %% [markdown]
# ### Exercise 2 · How many images for an error bar?
#
# Write `my_sample_size(p, se)`: the smallest $n$ with $\sqrt{p(1-p)/n} \le$ `se`. How many images per
# method would separate 40 % from 50 % accuracy by two standard errors?

# %%
def my_sample_size(p, se):
    return math.ceil(p * (1 - p) / se**2 - 1e-9)  # - 1e-9: round-off in se**2 must not add one


exercises.check_sample_size(my_sample_size)


# %% [markdown]
# ### Exercise 3 · $\hat x_0$ of images
#
# Write `my_image_x0(x, u, t)` for the Linear path with images `x`, `u` of shape (B, 1, 28, 28) and
# one time per image, `t` of shape (B,): reshape `t` so that it broadcasts.

# %%
def my_image_x0(x, u, t):
    return x - t.view(-1, 1, 1, 1) * u


exercises.check_image_x0(my_image_x0)


# %% [markdown]
# ### Exercise 4 · A count-like reward
#
# Write `my_ink(x0)` $= -|\#\{\text{pixels} > 0\} - 150|/100$ per image (images in $[-1, 1]$). It is
# piecewise constant: no gradient guidance with it, but every search method works. Try it with
# `search.run("rbf", flow, my_ink, ...)` (wrap it with `rewards.FunctionReward(my_ink, "ink", differentiable=False)`).

# %%
def my_ink(x0):
    ink = (x0 > 0).sum(dim=(1, 2, 3)).to(x0.dtype)
    return -(ink - 150).abs() / 100


exercises.check_ink_reward(my_ink)


# %% [markdown]
# ### Exercise 5 · Diversity
#
# Write `my_diversity(feats)`: the mean Euclidean distance over the pairs $i \ne j$ of the rows of
# `feats` (n, d). `metrics.feature_diversity(samples, evaluator)` applies it to the evaluator's
# features: which method collapses to one style of 7?

# %%
def my_diversity(feats):
    n = len(feats)
    d = (feats[:, None] - feats[None]).norm(dim=-1)  # (n, n), zero on the diagonal
    return d.sum() / (n * (n - 1))


exercises.check_diversity(my_diversity)

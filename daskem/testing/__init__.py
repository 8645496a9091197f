"""Test helpers shipped with daskem: synthetic data and the model contract suite."""

from daskem.datasets import MixtureSpec, make_mixture_array, mixture_spec, write_mixture_zarr
from daskem.testing.contract import ModelContract

__all__ = ["MixtureSpec", "ModelContract", "make_mixture_array", "mixture_spec", "write_mixture_zarr"]

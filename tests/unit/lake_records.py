"""Small typed lake records for unit tests."""
from visionlake.lake.manifest import ImageSpec, Manifest

GREY_28 = ImageSpec(mode="L", height=28, width=28, channels=1, resize="pad", invert=False)


def a_manifest(**fields) -> Manifest:
    """A manifest of dataset ``d`` with the given fields (tuples for ``live_runs`` and ``runs``)."""
    defaults = dict(dataset="d", version=1, run_id="i1", created_at="2026-01-01T00:00:00", image=GREY_28,
                    label_names=("a", "b"))
    return Manifest(**{**defaults, **fields})

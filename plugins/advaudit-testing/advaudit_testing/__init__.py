"""Test-only helpers for advaudit: reference networks, backdoor implants, a small trainer, a linear reference.

Used by advaudit's tests, benchmarks and ``sample_models/build*.py``; not part of the runtime package,
which never imports it. Import the submodules directly (``advaudit_testing.zoo``, ``.implants``,
``.training``, ``.linear``): they load torch, and the package itself stays free of side effects.
"""

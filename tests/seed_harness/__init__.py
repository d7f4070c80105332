"""Run the seed package's own tests (``py-opencode-wrapper==0.3.8``, unchanged) against ours.

Our users switch from that release, so its tests that exercise only its public interface are a
drop-in check: they must pass against this package as installed. The harness, step by step:

1. :mod:`seed_harness.sdist` obtains the sdist with ``pip download --no-deps --no-binary :all:``,
   caches it in the git-ignored ``.seed/`` at the repository root, verifies its sha256 on every use,
   and extracts only its ``tests/*.py`` (not the seed's ``opencode_wrapper``).
2. :mod:`seed_harness.selector` reads every test module with ``ast`` and decides, per test function,
   whether it uses only public names. The exclusion rules (details in that module):

   * **module imports a private name** of ``opencode_wrapper`` (``from opencode_wrapper.client
     import _readline_unlimited``, ``import opencode_wrapper._x``): all its tests are out, because
     the module cannot be imported where that implementation detail does not exist;
   * **the test references a private name**, itself or through any module-level helper, class,
     assigned name or fixture it uses, transitively: a dotted-path string into the package with a
     ``_`` component (``monkeypatch.setattr("opencode_wrapper.session._OpenCodeServer", ...)``),
     ``module._name`` on a package module, ``obj._name`` (or ``setattr(obj, "_name", ...)``) where
     ``_name`` is not declared by the test module's own classes (``session._log_fh``), or a private
     import inside a function.
3. :mod:`seed_harness.plan` applies the **gate policy**: a test that skips itself unless an env
   switch is set (found by the selector: env reads in the condition of its ``pytest.skip`` or
   ``skipif``) runs only if the switch can be met honestly; otherwise, or for a switch without a
   reviewed policy, or an unconditional skip, it is out (a skip never counts as a pass).
   ``OPENCODE_MULTI_AGENT_WEATHER`` (the 11-call weather test) cannot be: see ``plan.GATES``.
4. :mod:`seed_harness.runner` runs the selected tests in a child pytest isolated from this
   repository's pytest setup, with :mod:`seed_harness.fixtures` as its only extra plugin. That
   plugin supplies the fixtures the seed's integration tests need but its sdist does not ship
   (``opencode_path``: the pinned real opencode; ``integration_workspace``), and a private
   HOME/XDG tree whose global opencode config makes the offline model the only enabled provider,
   so the tests' model-less ``RunConfig``\\ s run on it. :mod:`seed_harness.model_rules` gives that
   model the few instruction-following behaviours the seed's prompts ask for.

Tests marked ``integration`` form their own group (real opencode processes); the rest run in a
couple of seconds.
"""

"""The ``opencode-wrapper`` command line (private): one module per command, plus the live view.

``app`` builds the parser and dispatches; ``common`` holds the shared options and the async
runner; ``observe`` feeds the views with live events; ``agents``/``live`` are the batch views;
``render`` turns events and results into lines and JSON.
"""

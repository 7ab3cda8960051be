"""The sky job agent (``/Agent/StageInFiles``, ``/Agent/RunJob``): stage files by id, run jobs in cells."""

"""The worker saver's dashboard: read-only HTML pages over the stored reports (``cellar-saver
--dashboard-listen``). Modules: auth (who may look), charts (inline SVG), pages (HTML), server (HTTP).
"""

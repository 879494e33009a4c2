"""The report wing: rendering only.

Each module here renders the results Capsule's services return (the records of
`builder.records` and the services' result objects) in one report format, one module per
format: `text` (rich, what the command line prints) now; `html` and `md` (the study report)
later. Nothing here loads, computes or decides anything: a renderer is handed everything it
shows, and the services stay the only place that reads capsules or runs statistics.
"""

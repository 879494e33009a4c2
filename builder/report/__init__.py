"""The report wing: rendering, one module per format, and `capsule report`'s service.

`text` renders what the command line prints (rich). The study report is `page` (the service:
gather → draw → render → write), `gather` (the page's data, read from the capsules through
`store`, `verdict` and `stats`, which stay the only places that judge or compute statistics),
`checklist`, `figures` (matplotlib), and one module per page format behind `formats`
(`html`, `markdown`). Importing this package imports nothing: matplotlib and jinja2 load only
when a report is made.
"""

"""Writing what analysis found: the report (markdown, HTML, plots, sample grids), the sections of
each kind of search and of the confirmation stage, and the closing summary a search prints.
"""

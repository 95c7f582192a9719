"""Reader studies (the paper's Appendix E, after MAIRA-2's design), as the `bench reader-study` command.

Radiologists judge generated findings sentence by sentence: keep, edit or delete; a changed
sentence gets one or more error categories and a clinical impact. This package selects
studies common to several runs, blinds and shuffles the systems per study, writes a workbook
per reader and serves a reading page, then reads the answers back, unblinds them and reports
the paper's statistics, the agreement between readers and how well each automatic metric of
the runs ranks reports as the readers do. Study directory layout: `readerstudy.layout`.
"""

"""Everything the toolkit fetches from outside, by what it fetches and when.

- ``datasets``: ``saliency fetch-data``, a benchmark's archives downloaded, checked, unpacked.
- ``weights``: ``saliency fetch-weights``, third-party weights by name, checked and converted.
- ``prefetch``: before a command's work starts, what it needs and does not have, fetched once.
- ``transfer``: the download and the safe zip extraction the other three share.
"""

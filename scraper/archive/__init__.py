"""The WARC archive of a crawl (storage.warc): every fetch kept as WARC 1.1 records.

- `records.py`: an Exchange (what went over the wire) as records, each one gzip member;
- `folder.py`: the files of the folder (names, locks, rotation, the repair of torn files);
- `writer.py`: the writer process's side (the functions the loop calls in it);
- `archive.py`: the loop's side, `Archive`, which the fetch stage and the pipeline write through;
- `cdxj.py`: the CDXJ index of a crawl's records, from the database.
"""

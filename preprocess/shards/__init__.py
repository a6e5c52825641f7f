"""The on-disk shard format, in one place: ``writer`` (tar + DALI index, atomic), ``encoding``
(a sample's components), ``reader`` (random access through the index), ``folder`` (plan,
records, index.parquet, shards.json) and ``verify`` (is a folder what it says it is)."""

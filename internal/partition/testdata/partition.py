# The partition function of flowedge in Python (docs/partitioning.md):
# xxhash64 of the key's UTF-8 bytes, placed with Jump Consistent Hash.
# Needs the xxhash module (pip install xxhash; Debian: python3-xxhash).
import xxhash


def partition_of(key: str, n: int) -> int:
    """The partition in [0, n) that owns key."""
    if n < 1:
        return 0
    h = xxhash.xxh64_intdigest(key.encode("utf-8"))
    b, j = -1, 0
    while j < n:
        b = j
        h = (h * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int(float(b + 1) * (float(1 << 31) / float((h >> 33) + 1)))
    return b


if __name__ == "__main__":
    # Reads "KEY<TAB>N" lines, writes the partition of each.
    import sys

    for line in sys.stdin:
        key, n = line.rstrip("\n").rsplit("\t", 1)
        print(partition_of(key, int(n)))

"""Value ranges every part of erofsgen agrees on: tree sources, transforms and the writer.

They come from Linux rather than from EROFS, so they live beside the model, not the format.
"""

from __future__ import annotations

# uid_t and gid_t are 32 bits, and (uid_t)-1 means "no id" to the kernel (chown(2) leaves the
# owner unchanged, and the kernel refuses to map it), so no file can be owned by it.
MAX_ID = 2**32 - 2

# Times in nanoseconds since the epoch: what seconds in a signed 64-bit field can express.
MIN_TIME_NS = -(2**63) * 10**9
MAX_TIME_NS = (2**63 - 1) * 10**9 + 999_999_999

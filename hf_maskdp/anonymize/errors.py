"""`ClipError`: the documented ways one clip can fail to be anonymized.

A stage raises it for a problem of the clip itself: a video that cannot be read (missing, empty,
corrupt, no video stream, zero frames), frames above `max_resolution`, or a row whose given poses
are absent or malformed. `AvatarAnonymizer.anonymize_clip` turns it into that row's `error: ...`
status (withheld, kept or raised by the `errors` policy). Any other exception is a bug and
propagates: it must never be mistaken for one bad clip.
"""

from __future__ import annotations


class ClipError(ValueError):
    """This clip cannot be anonymized, for the reason in the message (a `ValueError`, as before)."""

"""The names the package's parts share, in one place: the config, trainer, model card, CLI, Space and
quickstart import them from here. This module imports nothing, so the CLI's `--help` stays fast."""

# Training (`MaskDPConfig.privacy_mode`; docs/privacy.md defines each).
PRIVACY_MODES = ("maskdp", "dpsgd", "public_only", "none")
PRIVATE_MODES = ("maskdp", "dpsgd")  # a private branch: per-example clipping, noise, an accountant
PUBLIC_BRANCH_MODES = ("maskdp", "public_only")  # a public branch on the masks' public views
PUBLIC_VIEWS = ("fill", "drop")
ACCOUNTANTS = ("rdp", "prv", "pld")
DEFAULT_ACCOUNTANT = "rdp"  # what the theorem states

# What a run guarantees, saved next to the model (`hf_maskdp.privacy.record.PrivacyRecord`).
PRIVACY_RECORD_FILE = "maskdp_privacy.json"

# The `anonymization` column: "ok" rows are published; the others are withheld, as
# "no_person", "residual_person: ...", "partial: ..." or "error: ...".
STATUS_OK = "ok"
STATUS_NO_PERSON = "no_person"
STATUS_RESIDUAL = "residual_person"
STATUS_PARTIAL = "partial"
STATUS_ERROR = "error"

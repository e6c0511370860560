"""The kinds of destination as the UI's form asks for them: each kind's main options as
labelled fields (the rest go in "more options" as ``key=value`` lines).

Which options a kind takes is said by its module's docstring and checked by its
``check`` (``exporters/<kind>.py``); this module only says how to ask for the usual ones.
Every kind of ``exporters.registry.KINDS`` is here (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

# The consent a webhook's or a folder's use needs (the option ``channel``).
CHANNELS = (
    ("ads", _l("Advertising (needs ads consent)")),
    ("email", _l("Email (needs email consent)")),
)
FORMATS = (("csv", "CSV"), ("ndjson", "NDJSON"), ("parquet", "Parquet"))


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a kind, asked for in its own field."""

    name: str  # the option's name (for per-segment ones, the prefix: audience, list …)
    label: LazyString
    hint: LazyString | None = None
    required: bool = True
    choices: tuple[tuple[str, str | LazyString], ...] = ()  # a select's (value, label)
    per_segment: bool = False  # one value per segment: the option <name>.<segment id>
    placeholder: str = ""
    variable: bool = False  # names an environment variable (a secret is never stored)


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of destination: its name in the registry, its title and its usual options."""

    name: str
    title: str
    about: LazyString
    options: tuple[Option, ...]

    @property
    def target(self) -> Option | None:
        """Return the per-segment option (the audience, list or group of each segment)."""
        return next((o for o in self.options if o.per_segment), None)


def _variable(name: str, label: LazyString, placeholder: str) -> Option:
    hint = _l("The name of an environment variable of dmp's server, never the secret itself.")
    return Option(name, label, hint, placeholder=placeholder, variable=True)


_TOKEN = _l("Environment variable holding the access token")
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "meta",
            "Meta",
            _l("Custom Audiences for Facebook and Instagram ads (hashed emails and phones)."),
            (
                _variable("token_env", _TOKEN, "META_TOKEN"),
                Option("audience", _l("Custom Audience id"), per_segment=True),
            ),
        ),
        Kind(
            "google",
            "Google",
            _l("Customer Match lists for Google Ads (hashed emails, phones and addresses)."),
            (
                _variable("token_env", _TOKEN, "GOOGLE_TOKEN"),
                Option("operating_account_id", _l("Google Ads account number")),
                Option("audience", _l("Customer Match user list id"), per_segment=True),
            ),
        ),
        Kind(
            "linkedin",
            "LinkedIn",
            _l("Matched Audiences for LinkedIn ads (hashed emails; 300 members or more)."),
            (
                _variable("token_env", _TOKEN, "LINKEDIN_TOKEN"),
                Option("audience", _l("DMP segment id"), per_segment=True),
            ),
        ),
        Kind(
            "mailchimp",
            "Mailchimp",
            _l("One Mailchimp audience; each segment is a tag. Unsubscribes are respected."),
            (
                _variable("api_key_env", _l("Environment variable holding the API key"), "MC_KEY"),
                Option("list_id", _l("Audience id")),
                Option(
                    "tag",
                    _l("Tag"),
                    _l("Leave empty to use the segment id."),
                    required=False,
                    per_segment=True,
                ),
            ),
        ),
        Kind(
            "brevo",
            "Brevo",
            _l("Brevo contact lists, one per segment. Unsubscribes are respected."),
            (
                _variable("api_key_env", _l("Environment variable holding the API key"), "BREVO"),
                Option("list", _l("List id"), per_segment=True),
            ),
        ),
        Kind(
            "cleverreach",
            "CleverReach",
            _l("CleverReach receiver groups, one per segment, with double opt-in."),
            (
                _variable("token_env", _TOKEN, "CLEVERREACH_TOKEN"),
                Option("group", _l("Group id"), per_segment=True),
            ),
        ),
        Kind(
            "webhook",
            "Webhook",
            _l("Signed JSON batches sent to a URL of your own (a CRM, a data warehouse)."),
            (
                Option(
                    "url",
                    _l("URL"),
                    _l("Where the batches are sent (http or https)."),
                    placeholder="https://",
                ),
                _variable(
                    "secret_env",
                    _l("Environment variable holding the signing secret"),
                    "WEBHOOK_SECRET",
                ),
                Option("channel", _l("Use"), choices=CHANNELS),
            ),
        ),
        Kind(
            "file",
            _l("File"),
            _l("CSV, NDJSON or Parquet files in a folder (for SFTP drops and imports)."),
            (
                Option(
                    "folder",
                    _l("Folder"),
                    _l("A folder on dmp's server."),
                    placeholder="/srv/exports",
                ),
                Option("format", _l("Format"), choices=FORMATS),
                Option("channel", _l("Use"), choices=CHANNELS),
            ),
        ),
    )
}


def kind_title(name: str) -> str:
    """Return a kind's title for the page ('Meta', 'Webhook'; the name itself if unknown)."""
    found = KINDS.get(name)
    return str(found.title) if found else name

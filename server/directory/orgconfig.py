"""The organization's documents in the directory: settings.toml and the join secrets.

Two entries under the organization's configuration container (by default
`ou=mailctl,<the parent of the mailboxes' BaseDN>`), both of the class
mailctlOrganizationDocument (server/directory/mailctl.schema):

- `cn=settings`: settings.toml in mailctlDocument, its version in mailctlDocumentVersion.
  Every host may read it; the service account and the admins write it.
- `cn=secrets`: what a joining host needs and nobody else should have (the proxy secret,
  the organization's CA and its key, the service account's password), as JSON. Only the
  organization's admins may read it: docs/security.md gives the access rule.

A write is compare-and-set in one LDAP modify: delete mailctlDocumentVersion's old value,
add the next, replace the document. The server applies a modify's changes all or none, and
deleting a value that is no longer there fails (noSuchAttribute), so of two writers that
read the same version only the first succeeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.directory.ldap import DirectoryUnavailable, LdapDirectory
from server.settings.models import DirectorySettings
from server.settings.shared import SharedSettingsError

OBJECT_CLASS = "mailctlOrganizationDocument"
DOCUMENT = "mailctlDocument"
VERSION = "mailctlDocumentVersion"
NO_SUCH_ATTRIBUTE = 16
NO_SUCH_OBJECT = 32
ALREADY_EXISTS = 68


def default_container(base_dn: str) -> str:
    """ou=mailctl beside the mailboxes' container: ou=people,dc=x -> ou=mailctl,dc=x."""
    from ldap3.utils.dn import parse_dn

    parts = parse_dn(base_dn)
    parent = ",".join(f"{a}={v}" for a, v, _sep in parts[1:]) if len(parts) > 1 else base_dn
    return f"ou=mailctl,{parent}"


def container_of(settings_dn: str) -> str:
    return settings_dn.split(",", 1)[1]


class _Directory(LdapDirectory):
    """LdapDirectory's bounded, reconnecting calls, bound as the service account (its
    password file) or as whoever `password` is given for."""

    def __init__(self, config: DirectorySettings, root: Path, password: str | None) -> None:
        super().__init__(config, root)
        self._password = password

    def _bind_password(self) -> str | None:
        if self._password is not None:
            return self._password
        return super()._bind_password()


class OrgSettings:
    """server.settings.shared.Remote over the `cn=settings` entry at `settings_dn`."""

    def __init__(
        self,
        config: DirectorySettings,
        root: Path,
        settings_dn: str,
        *,
        bind_dn: str | None = None,
        password: str | None = None,
    ) -> None:
        if bind_dn is not None:
            config = config.model_copy(update={"BindDN": bind_dn})
        self.config = config
        self.settings_dn = settings_dn
        self.secrets_dn = f"cn=secrets,{container_of(settings_dn)}"
        self._ldap = _Directory(config, root, password)

    def close(self) -> None:
        self._ldap.close()

    def _call(self, op: str, *args: Any, **kw: Any) -> tuple[bool, Any]:
        try:
            return self._ldap._call(op, *args, **kw)
        except DirectoryUnavailable as exc:
            if "refused BindDN's password" in str(exc):
                raise SharedSettingsError(
                    f"the directory refused the password of {self.config.BindDN}"
                ) from None
            raise SharedSettingsError(
                f"the organization's settings in the directory cannot be reached ({exc})"
            ) from None

    def _read(self, dn: str, attributes: list[str]) -> dict[str, list[bytes]] | None:
        import ldap3

        ok, (response, result) = self._call(
            "search",
            dn,
            f"(objectClass={OBJECT_CLASS})",
            search_scope=ldap3.BASE,
            attributes=attributes,
        )
        if not ok and result.get("result") == NO_SUCH_OBJECT:
            return None
        if not ok:
            raise SharedSettingsError(f"reading {dn}: {result.get('description')}")
        for item in response or []:
            if item.get("type") == "searchResEntry":
                return {k.lower(): list(v) for k, v in (item.get("raw_attributes") or {}).items()}
        return None

    def version(self) -> int:
        """The version alone (what a host polls)."""
        attrs = self._read(self.settings_dn, [VERSION])
        if attrs is None:
            raise SharedSettingsError(f"there is no {self.settings_dn} in the directory")
        return int(attrs[VERSION.lower()][0])

    def read(self) -> tuple[str, int]:
        attrs = self._read(self.settings_dn, [VERSION, DOCUMENT])
        if attrs is None:
            raise SharedSettingsError(
                f"there is no {self.settings_dn} in the directory: prepare it first "
                "(mailctl setup /PrepareAD)"
            )
        return attrs[DOCUMENT.lower()][0].decode("utf-8"), int(attrs[VERSION.lower()][0])

    def swap(self, text: str, version: int) -> int | None:
        import ldap3

        ok, (_, result) = self._call(
            "modify",
            self.settings_dn,
            {
                VERSION: [
                    (ldap3.MODIFY_DELETE, [str(version)]),
                    (ldap3.MODIFY_ADD, [str(version + 1)]),
                ],
                DOCUMENT: [(ldap3.MODIFY_REPLACE, [text.encode("utf-8")])],
            },
        )
        if ok:
            return version + 1
        if result.get("result") == NO_SUCH_ATTRIBUTE:
            return None  # someone else's write came first
        raise SharedSettingsError(
            f"writing {self.settings_dn}: {result.get('description')} {result.get('message') or ''}".strip()
        )

    # --- preparing the organization and joining it (admin bind) -----------------------
    def _add(self, dn: str, classes: list[str], attrs: dict[str, Any]) -> bool:
        """Add an entry; False when it exists already."""
        ok, (_, result) = self._call("add", dn, classes, attrs)
        if not ok and result.get("result") == ALREADY_EXISTS:
            return False
        if not ok:
            raise SharedSettingsError(
                f"adding {dn}: {result.get('description')} {result.get('message') or ''}".strip()
            )
        return True

    def prepare(self, text: str, secrets: bytes) -> None:
        """Create the container and both documents; refuses when settings exist already."""
        container = container_of(self.settings_dn)
        rdn = container.split(",", 1)[0]
        attr, _, value = rdn.partition("=")
        if attr.lower() == "ou":
            self._add(container, ["organizationalUnit"], {"ou": value})
        elif attr.lower() == "cn":
            self._add(container, ["organizationalRole"], {"cn": value})
        if not self._add(
            self.settings_dn,
            [OBJECT_CLASS],
            {"cn": "settings", VERSION: "1", DOCUMENT: text.encode("utf-8")},
        ):
            raise SharedSettingsError(
                f"{self.settings_dn} exists already: this organization is prepared (join "
                "hosts to it with mailctl setup /Mode:Install /Role:Mailbox)"
            )
        if not self._add(
            self.secrets_dn, [OBJECT_CLASS], {"cn": "secrets", VERSION: "1", DOCUMENT: secrets}
        ):
            import ldap3

            ok, (_, result) = self._call(
                "modify", self.secrets_dn, {DOCUMENT: [(ldap3.MODIFY_REPLACE, [secrets])]}
            )
            if not ok:
                raise SharedSettingsError(f"writing {self.secrets_dn}: {result.get('description')}")

    def read_secrets(self) -> bytes:
        attrs = self._read(self.secrets_dn, [DOCUMENT])
        if attrs is None or not attrs.get(DOCUMENT.lower()):
            raise SharedSettingsError(
                f"cannot read {self.secrets_dn}: it is missing, or this account may not read "
                "it (bind as an admin of the organization)"
            )
        return attrs[DOCUMENT.lower()][0]

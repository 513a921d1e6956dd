"""The single-member baseline, ``single:<member>``: one member answers every turn alone.

No review stage, no policy (only ``full`` applies) and no fusion: the member's answer is the
turn's answer, and nothing is stored but the candidate. The report shows it as that member,
"m0 (single)", a baseline the blends are compared with.
"""

from __future__ import annotations

from pipeline.committee import Committee
from pipeline.errors import InputError
from pipeline.method import Method
from pipeline.policy import TurnRoles


class Single(Method):
    name = "single"
    takes_member = True
    fusable = False
    keeps_state = False
    report_role = "member"

    @staticmethod
    def member(method: str) -> str:
        """The member of ``single:<member>``."""
        return method.partition(":")[2]

    def named(self, member: str) -> str:
        """The method by which ``member`` answers alone: ``single:<member>``."""
        return f"{self.name}:{member}"

    def alone(self, method: str) -> str:
        return self.member(method)

    def label(self, method: str, policy: str, top_k: int) -> str:
        return f"{self.member(method)} (single)"

    def check(self, committee: Committee, method: str, policy: str) -> None:
        member = self.member(method)
        if member not in committee.generators:
            raise InputError(
                f"method {method!r}: {member!r} is not a generator of committee {committee.name!r}"
            )
        if policy != "full":
            raise InputError(f"method {method!r} answers with one member; policy {policy!r} does not apply")

    def fixed(self, method: str) -> TurnRoles:
        member = self.member(method)
        return TurnRoles((member,), (), f"single member {member}")


SINGLE = Single()

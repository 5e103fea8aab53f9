"""Route status (conditions and their transitions), the ConfigMap plan, RBAC objects."""
from __future__ import annotations

import json
from typing import Any

from operator_builders import route

from ringlane_operator.conditions import route_status, status_changed, transitions
from ringlane_operator.configmap import content_hash, current_generation, plan_configmap
from ringlane_operator.rbac import operator_cluster_role, sidecar_role, sidecar_role_binding
from ringlane_operator.render import RouteFacts, render_namespace
from ringlane_sidecar.config import Config, parse_config

OK = RouteFacts("a", 3, True, rules=("shop/a/0",), endpoints=2)
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_accepted_route() -> None:
    s = route_status(OK, None, T0)
    assert conds(s) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs"),
                        "Programmed": ("True", "Programmed")}
    assert s["observedGeneration"] == 3 and s["endpoints"] == 2
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == T0 for c in s["conditions"])


def test_conflict_and_unresolved_refs() -> None:
    f = RouteFacts("a", 1, False, "ListenerConflict", "port taken", ref_problems=("Service shop/x not found",))
    s = route_status(f, None, T0)
    assert conds(s) == {"Accepted": ("False", "ListenerConflict"), "ResolvedRefs": ("False", "BackendNotFound"),
                        "Programmed": ("False", "Invalid")}
    assert s["conditions"][1]["message"] == "Service shop/x not found"


def test_unrenderable_route_has_unknown_refs() -> None:
    s = route_status(RouteFacts("a", 1, False, "Invalid", "cannot render", resolved=False), None, T0)
    assert conds(s)["ResolvedRefs"] == ("Unknown", "Pending")


def test_transition_time_moves_only_when_status_changes() -> None:
    first = route_status(OK, None, T0)
    same = route_status(RouteFacts("a", 4, True, rules=("shop/a/0",), endpoints=5), first, T1)
    assert all(c["lastTransitionTime"] == T0 for c in same["conditions"])
    broken = route_status(RouteFacts("a", 5, False, "ListenerConflict", "x"), same, T1)
    times = {c["type"]: c["lastTransitionTime"] for c in broken["conditions"]}
    assert times == {"Accepted": T1, "ResolvedRefs": T0, "Programmed": T1}


def test_no_change_no_write() -> None:
    s = route_status(OK, None, T0)
    assert not status_changed(s, route_status(OK, s, T1))
    assert status_changed(None, s)


def test_events_only_for_problems_and_recoveries() -> None:
    healthy = route_status(OK, None, T0)
    assert transitions(None, healthy) == []
    bad = route_status(RouteFacts("a", 1, False, "ListenerConflict", "port taken"), healthy, T1)
    assert transitions(healthy, bad) == [("Warning", "ListenerConflict", "Accepted: port taken"),
                                         ("Warning", "Invalid", "Programmed: not programmed: port taken")]
    assert transitions(bad, bad) == []
    assert [e[0] for e in transitions(bad, route_status(OK, bad, T1))] == ["Normal", "Normal"]


CFG = render_namespace("shop", [route("a")], {}, {}).config


def test_first_write_creates_generation_1() -> None:
    plan = plan_configmap("shop", CFG, [route("a")], None)
    assert plan.create and plan.generation == 1
    meta = plan.body["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "ringlane"
    assert meta["annotations"] == {"ringlane.io/config-hash": content_hash(CFG), "ringlane.io/generation": "1"}
    assert parse_config(json.loads(plan.body["data"]["config.json"])).generation == 1


def written(plan: Any, uid: str = "cm-1") -> dict[str, Any]:
    body = json.loads(json.dumps(plan.body))
    body["metadata"].update(uid=uid, resourceVersion="7")
    return body


def test_same_content_is_not_rewritten_and_keeps_its_generation() -> None:
    existing = written(plan_configmap("shop", CFG, [route("a")], None))
    again = plan_configmap("shop", CFG, [route("a")], existing)
    assert (again.body, again.generation) == (None, 1)


def test_content_change_bumps_the_generation_once() -> None:
    existing = written(plan_configmap("shop", CFG, [route("a")], None))
    other = render_namespace("shop", [route("a", port=81)], {}, {}).config
    plan = plan_configmap("shop", other, [route("a")], existing)
    assert plan.generation == 2 and not plan.create
    assert plan.body["metadata"]["resourceVersion"] == "7"
    assert json.loads(plan.body["data"]["config.json"])["generation"] == 2


def test_owner_change_alone_keeps_the_generation() -> None:
    existing = written(plan_configmap("shop", CFG, [route("a")], None))
    plan = plan_configmap("shop", CFG, [route("a"), route("b")], existing)
    assert plan.generation == 1
    assert [o["name"] for o in plan.body["metadata"]["ownerReferences"]] == ["a", "b"]


def test_hand_edited_data_is_restored_with_a_new_generation() -> None:
    existing = written(plan_configmap("shop", CFG, [route("a")], None))
    existing["data"]["config.json"] = "{}"
    assert plan_configmap("shop", CFG, [route("a")], existing).generation == 2


def test_owner_references_are_all_live_routes_none_controller() -> None:
    plan = plan_configmap("shop", CFG, [route("b"), route("a"), route("gone", deleting=True)], None)
    refs = plan.body["metadata"]["ownerReferences"]
    assert [r["name"] for r in refs] == ["a", "b"]
    assert all(r["kind"] == "ProxyRoute" and r["apiVersion"] == "ringlane.io/v1alpha1" and not r["controller"]
               and r["uid"] == f"uid-{r['name']}" for r in refs)


def test_last_route_gone_leaves_an_empty_config_without_owners() -> None:
    existing = written(plan_configmap("shop", CFG, [route("a")], None))
    plan = plan_configmap("shop", Config(), [], existing)
    assert plan.generation == 2 and plan.body["metadata"]["ownerReferences"] == []
    assert parse_config(json.loads(plan.body["data"]["config.json"])).listeners == ()


def test_generation_read_from_config_when_annotation_is_missing() -> None:
    assert current_generation({"data": {"config.json": json.dumps({"generation": 41})}}) == 41
    assert current_generation({"data": {"config.json": "not json"}}) == 0
    assert current_generation(None) == 0


def test_sidecar_rbac_is_limited_to_the_routes_configmap() -> None:
    role = sidecar_role("shop", "cm-uid")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["ringlane-routes"],
                              "verbs": ["get", "list", "watch"]}]
    assert role["metadata"]["ownerReferences"][0]["uid"] == "cm-uid"
    binding = sidecar_role_binding("shop")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                    "name": "system:serviceaccounts:shop"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "ringlane-sidecar"
    assert binding["metadata"]["ownerReferences"] == []


def test_operator_holds_what_it_grants() -> None:
    rules = operator_cluster_role()["rules"]
    cm = next(r for r in rules if r["resources"] == ["configmaps"])
    assert {"get", "list", "watch"} <= set(cm["verbs"])

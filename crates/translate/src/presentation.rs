//! Status presentation: keeping condition transition times stable across reloads, and the
//! human-readable form printed by `gateway status`.

use crate::ObjectStatus;

/// A condition keeps its `lastTransitionTime` while its status does not change, as the Gateway
/// API's condition semantics require.
pub fn carry_transition_times(prev: &[ObjectStatus], next: &mut [ObjectStatus]) {
    for n in next.iter_mut() {
        if let Some(p) = prev.iter().find(|p| {
            p.kind == n.kind
                && p.metadata.namespace == n.metadata.namespace
                && p.metadata.name == n.metadata.name
        }) {
            carry(&p.status, &mut n.status);
        }
    }
}

fn carry(old: &serde_json::Value, new: &mut serde_json::Value) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, nv) in n.iter_mut() {
                if let Some(ov) = o.get(k) {
                    if k == "conditions" {
                        carry_conditions(ov, nv);
                    } else {
                        carry(ov, nv);
                    }
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            // Lists of listeners or parents: pair entries by their identity.
            for nv in n.iter_mut() {
                let id = nv.get("name").or_else(|| nv.get("parentRef")).cloned();
                if let Some(ov) = o.iter().find(|ov| {
                    id.is_some() && ov.get("name").or_else(|| ov.get("parentRef")) == id.as_ref()
                }) {
                    carry(ov, nv);
                }
            }
        }
        _ => {}
    }
}

fn carry_conditions(old: &serde_json::Value, new: &mut serde_json::Value) {
    let (Some(old), Some(new)) = (old.as_array(), new.as_array_mut()) else {
        return;
    };
    for c in new.iter_mut() {
        if let Some(o) = old.iter().find(|o| o.get("type") == c.get("type")) {
            if o.get("status") == c.get("status") {
                if let Some(t) = o.get("lastTransitionTime") {
                    c["lastTransitionTime"] = t.clone();
                }
            }
        }
    }
}

/// The status of every object as readable text.
pub fn render_text(statuses: &[ObjectStatus]) -> String {
    let mut out = String::new();
    let conds = |v: &serde_json::Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        let s = format!(
                            "{}={} ({})",
                            c["type"].as_str().unwrap_or(""),
                            c["status"].as_str().unwrap_or(""),
                            c["reason"].as_str().unwrap_or("")
                        );
                        if c["status"] == "True"
                            || c["type"] == "Conflicted" && c["status"] == "False"
                        {
                            s
                        } else {
                            format!("{s}: {}", c["message"].as_str().unwrap_or(""))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for s in statuses {
        let name = match &s.metadata.namespace {
            Some(ns) => format!("{ns}/{}", s.metadata.name),
            None => s.metadata.name.clone(),
        };
        match s.kind.as_str() {
            "Gateway" => {
                let addrs: Vec<&str> = s.status["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["value"].as_str())
                    .collect();
                out.push_str(&format!(
                    "Gateway {name} [{}]\n  {}\n",
                    addrs.join(", "),
                    conds(&s.status["conditions"])
                ));
                for l in s.status["listeners"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "  listener {} (attachedRoutes {}): {}\n",
                        l["name"].as_str().unwrap_or(""),
                        l["attachedRoutes"],
                        conds(&l["conditions"])
                    ));
                }
            }
            "HTTPRoute" => {
                out.push_str(&format!("HTTPRoute {name}\n"));
                for p in s.status["parents"].as_array().into_iter().flatten() {
                    let pr = &p["parentRef"];
                    let section = pr["sectionName"]
                        .as_str()
                        .map(|s| format!(" section {s}"))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "  parent Gateway {}/{}{section}: {}\n",
                        pr["namespace"].as_str().unwrap_or(""),
                        pr["name"].as_str().unwrap_or(""),
                        conds(&p["conditions"])
                    ));
                }
            }
            _ => out.push_str(&format!(
                "{} {name}\n  {}\n",
                s.kind,
                conds(&s.status["conditions"])
            )),
        }
    }
    out
}

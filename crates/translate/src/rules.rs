//! Rule compilation: matches, timeouts, retries and filters of one HTTPRoute rule into the routing
//! table, and the precedence order of a listener's routes.

use super::*;

/// The rules of a route, compiled once for every parent it attaches to.
pub(super) struct CompiledRule {
    pub(super) matches: Vec<(RouteMatch, RouteOrder)>,
    /// The action until a listener takes the rule; then it is in the configuration, at
    /// `action_id`. (A rule no listener takes adds nothing.)
    action: Option<RuleAction>,
    action_id: Option<sluice_config::ActionId>,
}

impl CompiledRule {
    /// The rule's action in the configuration, added the first time it is asked for.
    pub(super) fn action_id(&mut self, config: &mut Config) -> sluice_config::ActionId {
        if let Some(id) = self.action_id {
            return id;
        }
        let id = config.add_action(self.action.take().unwrap_or_default());
        self.action_id = Some(id);
        id
    }
}

/// A Gateway API duration (`1h`, `30s`, `500ms`, combinations). Zero means no timeout.
pub(super) fn parse_duration(
    v: Option<&str>,
    field: &str,
) -> Result<Option<std::time::Duration>, (String, String)> {
    let Some(v) = v else { return Ok(None) };
    let d: gateway_api::Duration = v
        .parse()
        .map_err(|e| (field.to_string(), format!("invalid duration {v:?}: {e}")))?;
    let d = std::time::Duration::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Ok((!d.is_zero()).then_some(d))
}

/// Regexes are anchored: a match means the whole value matches, as in Envoy's RE2 semantics.
/// Returns the anchored expression, checked; the engine compiles it.
pub(super) fn compile_regex(pattern: &str) -> Result<String, String> {
    let anchored = format!("^(?:{pattern})$");
    Regex::new(&anchored)
        .map(|_| anchored)
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// Compiles one rule. `Err` means the rule uses something we do not support (the route is
/// then not accepted); the problems list holds references that did not resolve.
pub(super) fn compile_rule(
    store: &Store,
    key: &NsName,
    route: &Object<HttpRoute>,
    ri: usize,
    rule: &HttpRouteRules,
    tables: &mut Tables,
) -> Result<(CompiledRule, RuleProblems), (String, String)> {
    let default_match = [HttpRouteRulesMatches::default()];
    let matches: &[HttpRouteRulesMatches] = match rule.matches.as_deref() {
        None | Some([]) => &default_match,
        Some(m) => m,
    };
    let mut compiled_matches = Vec::new();
    for (mi, m) in matches.iter().enumerate() {
        compiled_matches.push(compile_match(key, route, ri, mi, m)?);
    }

    // The path matched by the first match, for ReplacePrefixMatch.
    let matched_prefix = match matches.first().and_then(|m| m.path.as_ref()) {
        Some(p)
            if p.r#type
                .as_ref()
                .is_none_or(|t| *t == HttpRouteRulesMatchesPathType::PathPrefix) =>
        {
            p.value.clone().unwrap_or_else(|| "/".into())
        }
        None => "/".into(),
        Some(_) => String::new(),
    };

    let mut problems: RuleProblems = Vec::new();
    let mut action = RuleAction {
        route_label: key.to_string(),
        ..RuleAction::default()
    };
    timeouts_and_retry(rule, ri, &mut action)?;
    for (fi, f) in rule.filters.iter().flatten().enumerate() {
        let field = format!(".spec.rules[{ri}].filters[{fi}]");
        apply_filter(
            store,
            key,
            f,
            &field,
            &matched_prefix,
            &mut action,
            &mut problems,
            tables,
        )?;
    }
    let backend_refs = rule.backend_refs.as_deref().unwrap_or_default();
    if backend_refs.is_empty() && action.redirect.is_none() {
        action.no_backends = true;
    }
    for (bi, b) in backend_refs.iter().enumerate() {
        let field = format!(".spec.rules[{ri}].backendRefs[{bi}]");
        let backend = weighted_backend(
            store,
            key,
            b,
            &field,
            &matched_prefix,
            &mut problems,
            tables,
        )?;
        if backend.weight > 0 {
            action.total_weight += u64::from(backend.weight);
            action.backends.push(backend);
        }
    }
    Ok((
        CompiledRule {
            matches: compiled_matches,
            action: Some(action),
            action_id: None,
        },
        problems,
    ))
}

/// One match of a rule: its matcher and its place in the Gateway API precedence.
fn compile_match(
    key: &NsName,
    route: &Object<HttpRoute>,
    ri: usize,
    mi: usize,
    m: &HttpRouteRulesMatches,
) -> Result<(RouteMatch, RouteOrder), (String, String)> {
    let field = format!(".spec.rules[{ri}].matches[{mi}]");
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.r#type.clone())
        .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix);
    let path_value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let (path, kind) = match path_type {
        HttpRouteRulesMatchesPathType::Exact => (PathMatch::Exact(path_value.clone()), 3),
        HttpRouteRulesMatchesPathType::PathPrefix => (
            PathMatch::Prefix(path_value.trim_end_matches('/').to_string()),
            2,
        ),
        HttpRouteRulesMatchesPathType::RegularExpression => (
            PathMatch::Regex(
                compile_regex(&path_value).map_err(|e| (format!("{field}.path.value"), e))?,
            ),
            1,
        ),
    };
    let mut headers = Vec::new();
    for (hi, h) in m.headers.iter().flatten().enumerate() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| (format!("{field}.headers[{hi}].name"), e.to_string()))?
            .as_str()
            .to_string();
        let value = match h.r#type {
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => StringMatch::Regex(
                compile_regex(&h.value).map_err(|e| (format!("{field}.headers[{hi}].value"), e))?,
            ),
            _ => StringMatch::Exact(h.value.clone()),
        };
        // The first match of a header name wins; later duplicates are ignored (spec).
        if !headers.iter().any(|x: &HeaderMatch| x.name == name) {
            headers.push(HeaderMatch { name, value });
        }
    }
    let mut query = Vec::new();
    for (qi, q) in m.query_params.iter().flatten().enumerate() {
        let value = match q.r#type {
            Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression) => StringMatch::Regex(
                compile_regex(&q.value)
                    .map_err(|e| (format!("{field}.queryParams[{qi}].value"), e))?,
            ),
            _ => StringMatch::Exact(q.value.clone()),
        };
        if !query.iter().any(|x: &QueryMatch| x.name == q.name) {
            query.push(QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
    }
    let method = m.method.as_ref().map(|meth| {
        let s = serde_json::to_value(meth)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Method::from_bytes(s.as_bytes())
            .unwrap_or(Method::GET)
            .as_str()
            .to_string()
    });
    let path_len = match &path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => p.len(),
        PathMatch::Regex(r) => r.len(),
    };
    let order = RouteOrder {
        path_kind: std::cmp::Reverse(kind),
        path_len: std::cmp::Reverse(path_len),
        grpc_method_len: std::cmp::Reverse(0),
        method: std::cmp::Reverse(method.is_some()),
        headers: std::cmp::Reverse(headers.len()),
        query: std::cmp::Reverse(query.len()),
        created: route.created,
        route: key.clone(),
        rule: ri,
        matcher: mi,
    };
    Ok((
        RouteMatch {
            path,
            method,
            headers,
            query,
        },
        order,
    ))
}

/// `timeouts` and `retry` of a rule.
fn timeouts_and_retry(
    rule: &HttpRouteRules,
    ri: usize,
    action: &mut RuleAction,
) -> Result<(), (String, String)> {
    if let Some(t) = &rule.timeouts {
        let field = format!(".spec.rules[{ri}].timeouts");
        action.request_timeout = parse_duration(t.request.as_deref(), &format!("{field}.request"))?;
        action.backend_timeout = parse_duration(
            t.backend_request.as_deref(),
            &format!("{field}.backendRequest"),
        )?;
    }
    if let Some(r) = &rule.retry {
        let field = format!(".spec.rules[{ri}].retry");
        let codes = r
            .codes
            .iter()
            .flatten()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect();
        action.retry = Some(sluice_config::RetryPolicy {
            codes,
            attempts: r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(1),
            backoff: parse_duration(r.backoff.as_deref(), &format!("{field}.backoff"))?
                .unwrap_or_default(),
        });
    }
    Ok(())
}

/// One backendRef of a rule: its target and weight, and its own header filters.
fn weighted_backend(
    store: &Store,
    key: &NsName,
    b: &gateway_api::experimental::httproutes::HttpRouteRulesBackendRefs,
    field: &str,
    matched_prefix: &str,
    problems: &mut RuleProblems,
    tables: &mut Tables,
) -> Result<WeightedBackend, (String, String)> {
    let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
    let target = resolve_backend(
        store,
        key,
        b.group.as_deref(),
        b.kind.as_deref(),
        &b.name,
        b.namespace.as_deref(),
        b.port,
        tables,
    );
    note_invalid(&target, field.to_string(), problems);
    let mut backend = WeightedBackend {
        weight,
        target,
        request_headers: None,
        response_headers: None,
    };
    for (fi, f) in b.filters.iter().flatten().enumerate() {
        let ffield = format!("{field}.filters[{fi}]");
        // Backend filters have the same schema as rule filters.
        let f: HttpRouteRulesFilters = serde_json::to_value(f)
            .and_then(serde_json::from_value)
            .map_err(|e| (ffield.clone(), e.to_string()))?;
        let mut sub = RuleAction::default();
        apply_filter(
            store,
            key,
            &f,
            &ffield,
            matched_prefix,
            &mut sub,
            problems,
            tables,
        )?;
        if sub.rewrite.is_some()
            || sub.redirect.is_some()
            || !sub.mirrors.is_empty()
            || sub.cors.is_some()
        {
            return Err((
                ffield,
                "only RequestHeaderModifier and ResponseHeaderModifier are supported on a backendRef".into(),
            ));
        }
        backend.request_headers = sub.request_headers.or(backend.request_headers);
        backend.response_headers = sub.response_headers.or(backend.response_headers);
    }
    Ok(backend)
}

/// Places route matches into hostname groups, each sorted by precedence.
pub(super) fn route_table(pending: &[PendingRoute]) -> RouteTable {
    let mut exact: BTreeMap<String, Vec<(&RouteOrder, RouteId)>> = BTreeMap::new();
    let mut wildcard: HashMap<String, Vec<(&RouteOrder, RouteId)>> = HashMap::new();
    let mut any: Vec<(&RouteOrder, RouteId)> = Vec::new();
    for p in pending {
        for h in &p.hostnames {
            let entry = (&p.order, p.route);
            match h.as_deref() {
                None => any.push(entry),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_default().push(entry),
                    None => exact.entry(h.to_string()).or_default().push(entry),
                },
            }
        }
    }
    let sorted = |mut v: Vec<(&RouteOrder, RouteId)>| {
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
    };
    let group = |(host, v)| HostRoutes {
        host,
        routes: sorted(v),
    };
    let mut wild: Vec<HostRoutes> = wildcard.into_iter().map(group).collect();
    wild.sort_by(|a, b| b.host.len().cmp(&a.host.len()).then(a.host.cmp(&b.host)));
    RouteTable {
        exact: exact.into_iter().map(group).collect(),
        wildcard: wild,
        any: sorted(any),
    }
}

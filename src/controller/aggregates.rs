//! Aggregators: which connections one covers (names, globs, a label
//! selector; connections created later included), and, in a workspace,
//! which of them are its members: those attached there and Ready. Pure
//! over the stores.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::context::Stores;
use super::resolve;
use super::status::attachment_state;
use crate::api::{AggregatorSpec, Connection, MemberState, conditions, glob};
use crate::postgres::plan::{Member, Owner};

/// Whether labels match a selector (matchLabels and matchExpressions).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labelled = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressed = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labelled && expressed
}

/// Whether an aggregator covers a connection. Aggregators never cover
/// aggregators.
pub fn covers(aggregator: &AggregatorSpec, conn: &Connection) -> bool {
    if conn.spec.aggregator.is_some() || conn.spec.plugin.is_none() {
        return false;
    }
    let name = conn.name_any();
    aggregator.connections.iter().any(|p| glob(p, &name)) || aggregator.selector.as_ref().is_some_and(|s| selects(s, conn.labels()))
}

/// The connections of a namespace an aggregator covers, sorted by name.
pub fn covered(stores: &Stores, ns: &str, aggregator: &AggregatorSpec) -> Vec<std::sync::Arc<Connection>> {
    let mut list: Vec<_> = stores
        .connections
        .state()
        .into_iter()
        .filter(|c| c.namespace().as_deref() == Some(ns) && c.metadata.deletion_timestamp.is_none() && covers(aggregator, c))
        .collect();
    list.sort_by_key(|c| c.name_any());
    list
}

/// An aggregator's members in one workspace: the covered connections whose
/// attachment to it is Ready, by their schema. A member that fails is left
/// out (its state says why).
pub fn members(stores: &Stores, ns: &str, workspace: &str, aggregator: &AggregatorSpec) -> Vec<Member> {
    let attachments = stores.attachments_of_workspace(ns, workspace);
    covered(stores, ns, aggregator)
        .iter()
        .filter_map(|conn| {
            let name = conn.name_any();
            attachments
                .iter()
                .filter(|a| a.spec.connection == name && a.metadata.deletion_timestamp.is_none())
                .find(|a| a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)))
                .and_then(|a| a.status.as_ref()?.schema.clone())
                .map(|schema| Member { connection: name, schema })
        })
        .collect()
}

/// The aggregators attached to a workspace that cover `conn`: the owners
/// and schemas whose views its attachment joins. Every attach asks, so it
/// starts from the namespace's aggregators (usually none), not from the
/// workspace's attachments (thousands).
pub fn joined_by(stores: &Stores, ns: &str, workspace: &str, conn: &Connection) -> Vec<(Owner, String)> {
    let aggregators = stores.index.read().unwrap().aggregators(ns);
    let mut joined = Vec::new();
    for agg in aggregators.iter().filter_map(|name| stores.connection(ns, name)) {
        let Some(spec) = agg.spec.aggregator.as_ref() else { continue };
        let Ok(schema) = resolve::connection_schema(&agg) else { continue };
        if !covers(spec, conn) {
            continue;
        }
        for a in stores.attachments_of_connection(ns, &agg.name_any()) {
            if a.spec.workspace == workspace && a.metadata.deletion_timestamp.is_none() {
                joined.push((resolve::owner(&a), schema.clone()));
            }
        }
    }
    joined
}

/// An aggregator's members as its Connection's status lists them: every
/// covered connection, with `Ready` or the reason it is left out.
pub fn states(stores: &Stores, ns: &str, aggregator: &AggregatorSpec) -> Vec<MemberState> {
    covered(stores, ns, aggregator)
        .iter()
        .map(|conn| {
            let name = conn.name_any();
            let state = conn
                .status
                .as_ref()
                .and_then(|s| conditions::ready(&s.conditions))
                .map(|c| if c.status == "True" { "Ready".to_owned() } else { c.reason.clone() })
                .unwrap_or_else(|| "Pending".to_owned());
            let attached = stores.attachments_of_connection(ns, &name);
            let state = if state == "Ready" && attached.is_empty() { "NotAttached".to_owned() } else { state };
            let state = match attached.iter().map(|a| attachment_state(a)).find(|s| s != "Ready") {
                Some(failing) if state == "Ready" => failing,
                _ => state,
            };
            MemberState { name, state }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors_match_labels() {
        let labels: BTreeMap<String, String> = [("cloud".to_owned(), "aws".to_owned()), ("tier".to_owned(), "prod".to_owned())].into();
        let by_label = LabelSelector { match_labels: Some([("cloud".to_owned(), "aws".to_owned())].into()), ..Default::default() };
        assert!(selects(&by_label, &labels));
        let expression = |operator: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: operator.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selects(&expression("In", &["prod", "dev"]), &labels));
        assert!(!selects(&expression("NotIn", &["prod"]), &labels));
        assert!(selects(&expression("Exists", &[]), &labels));
        assert!(!selects(&expression("DoesNotExist", &[]), &labels));
    }
}

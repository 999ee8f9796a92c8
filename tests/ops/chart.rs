//! The Helm chart: lint, `helm install`, and `helm template | kubectl apply
//! --server-side`, into the real apiserver.

use crate::support::{control_plane, repo_root, stdout_ok, unique};

fn chart() -> String {
    repo_root().join("charts/manifold").to_string_lossy().into_owned()
}

pub async fn helm_lint_is_clean() {
    let cp = control_plane();
    for extra in [&[][..], &["--set", "watchNamespaces={org-a,org-b}", "--set", "metrics.serviceMonitor.enabled=true"][..]] {
        let chart = chart();
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend_from_slice(extra);
        let printed = stdout_ok(&cp.helm(&args));
        assert!(printed.contains("1 chart(s) linted, 0 chart(s) failed"), "{printed}");
        assert!(!printed.contains("[WARNING]") && !printed.contains("[ERROR]"), "{printed}");
    }
    // values.schema.json refuses nonsense.
    let out = cp.helm(&["template", "x", &chart(), "--set", "operator.resync=soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resync"));
}

pub async fn chart_crds_are_the_generated_crds() {
    for file in ["workspaces.yaml", "connections.yaml", "workspaceconnections.yaml"] {
        let top = std::fs::read_to_string(repo_root().join("crds").join(file)).unwrap();
        let chart = std::fs::read_to_string(repo_root().join("charts/manifold/crds").join(file)).unwrap();
        assert!(top == chart, "charts/manifold/crds/{file} differs from crds/{file}: copy crds/*.yaml into the chart");
    }
}

/// The chart's admission policies are the ones in admission/, under the
/// release's name.
pub async fn chart_admission_policy_is_the_one_in_admission() {
    let cp = control_plane();
    let docs = |text: &str| -> Vec<serde_json::Value> {
        text.split("\n---")
            .filter(|d| d.contains("kind:"))
            .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    };
    for (template, file, name) in [
        ("templates/admission-policy.yaml", "admission/secret-references.yaml", "mf-manifold-secret-references"),
        ("templates/admission-attach.yaml", "admission/attach.yaml", "mf-manifold-attach"),
    ] {
        let rendered = stdout_ok(&cp.helm(&["template", "mf", &chart(), "--show-only", template]));
        let chart_docs = docs(&rendered);
        let file_docs = docs(&std::fs::read_to_string(repo_root().join(file)).unwrap());
        assert_eq!(chart_docs.len(), 2);
        assert_eq!(chart_docs[0]["spec"], file_docs[0]["spec"], "{template}: the policy differs from {file}");
        assert_eq!(chart_docs[1]["spec"]["validationActions"], file_docs[1]["spec"]["validationActions"]);
        assert_eq!(chart_docs[1]["spec"]["policyName"], name);
        // It can be turned off, and nothing else renders then.
        let off = cp.helm(&["template", "mf", &chart(), "--show-only", template, "--set", "admissionPolicy.enabled=false"]);
        assert!(!off.status.success() || !String::from_utf8_lossy(&off.stdout).contains("ValidatingAdmissionPolicy"));
    }
}

pub async fn helm_install_creates_the_release() {
    let cp = control_plane();
    let ns = unique("helm-install");
    stdout_ok(&cp.helm(&["install", "mf", &chart(), "-n", &ns, "--create-namespace", "--set", "replicaCount=2"]));
    let status = stdout_ok(&cp.helm(&["status", "mf", "-n", &ns, "-o", "json"]));
    assert!(status.contains("\"status\":\"deployed\""), "{status}");
    let objects = stdout_ok(&cp.kubectl(&["get", "deploy,sa,svc,role,rolebinding", "-n", &ns, "-o", "name"]));
    for expected in [
        "deployment.apps/mf-manifold",
        "serviceaccount/mf-manifold",
        "service/mf-manifold-metrics",
        "role.rbac.authorization.k8s.io/mf-manifold-leader",
        "rolebinding.rbac.authorization.k8s.io/mf-manifold-leader",
    ] {
        assert!(objects.lines().any(|l| l == expected), "missing {expected} in {objects}");
    }
    let replicas = stdout_ok(&cp.kubectl(&["get", "deploy", "mf-manifold", "-n", &ns, "-o", "jsonpath={.spec.replicas}"]));
    assert_eq!(replicas, "2");
    // The pod is hardened.
    let sc = stdout_ok(&cp.kubectl(&[
        "get",
        "deploy",
        "mf-manifold",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.template.spec.securityContext.runAsNonRoot} {.spec.template.spec.securityContext.seccompProfile.type} \
         {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} \
         {.spec.template.spec.containers[0].securityContext.capabilities.drop[0]}",
    ]));
    assert_eq!(sc, "true RuntimeDefault true ALL");
    stdout_ok(&cp.kubectl(&["get", "clusterrole", "mf-manifold"]));
    // The admission policy came with it.
    stdout_ok(&cp.kubectl(&["get", "validatingadmissionpolicy,validatingadmissionpolicybinding", "mf-manifold-secret-references"]));
    stdout_ok(&cp.kubectl(&["get", "validatingadmissionpolicy,validatingadmissionpolicybinding", "mf-manifold-attach"]));
    // The roles people and GitOps ServiceAccounts are given.
    stdout_ok(&cp.kubectl(&["get", "clusterrole", "mf-manifold-edit", "mf-manifold-view", "mf-manifold-attacher"]));
    stdout_ok(&cp.helm(&["uninstall", "mf", "-n", &ns]));
}

pub async fn helm_template_applies_server_side() {
    let cp = control_plane();
    let (ns, org) = (unique("tmpl-sys"), unique("tmpl-org"));
    for n in [&ns, &org] {
        stdout_ok(&cp.kubectl(&["create", "namespace", n]));
    }
    let rendered = stdout_ok(&cp.helm(&["template", "gitops", &chart(), "-n", &ns, "--set", &format!("watchNamespaces={{{org}}}")]));
    let applied = cp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &rendered);
    stdout_ok(&applied);
    stdout_ok(&cp.kubectl(&["get", "role,rolebinding", "gitops-manifold", "-n", &org]));
    let cluster_role = cp.kubectl(&["get", "clusterrole", "gitops-manifold"]);
    assert!(!cluster_role.status.success(), "namespaced mode makes no ClusterRole");
    let args =
        stdout_ok(&cp.kubectl(&["get", "deploy", "gitops-manifold", "-n", &ns, "-o", "jsonpath={.spec.template.spec.containers[0].args}"]));
    assert!(args.contains(&format!("--namespaces={org}")), "{args}");
}

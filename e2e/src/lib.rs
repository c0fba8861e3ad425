//! End-to-end suite for kfaas, run against the cluster named by KUBECONFIG.

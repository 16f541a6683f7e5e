"""GitOps integrations: the Argo CD health check for T2IWorkflow."""

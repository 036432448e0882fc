"""The endpoints LM Studio serves, per namespace (from the TypeScript SDK 2.0.0).

Extracted from ``@lmstudio/sdk`` 2.0.0 (``create*BackendInterface`` in ``dist/index.cjs``),
which is a superset of 1.5.0 and of the Python SDK 1.5.0. The emulator uses it to tell an
endpoint LM Studio has but the emulator does not serve (answered with an error, so no client
waits) from an endpoint LM Studio does not know (only a ``communicationWarning``, as LM Studio).
"""

from __future__ import annotations

__all__ = ["CHANNELS", "NAMESPACES", "RPCS"]

_BASE_MODEL_RPCS = (
    "unloadModel listLoaded getModelInfo getLoadConfig getBasePredictionConfig "
    "getInstanceProcessingState estimateModelUsage"
)
_BASE_MODEL_CHANNELS = "loadModel getOrLoad"


def _names(*groups: str) -> frozenset[str]:
    """Split space-separated endpoint names into a set."""
    return frozenset(" ".join(groups).split())


RPCS: dict[str, frozenset[str]] = {
    "llm": _names(_BASE_MODEL_RPCS, "applyPromptTemplate tokenize countTokens preloadDraftModel"),
    "embedding": _names(_BASE_MODEL_RPCS, "embedString tokenize countTokens"),
    "system": _names(
        "listDownloadedModels listDownloadedModelVariants notify version "
        "setExperimentFlag getExperimentFlags startHttpServer stopHttpServer info "
        "requestShutdown"
    ),
    "diagnostics": _names(),
    "files": _names("getLocalFileAbsolutePath uploadFileBase64 getDocumentParsingLibrary"),
    "repository": _names(
        "searchModels getModelDownloadOptions installPluginDependencies "
        "getLocalArtifactFiles getWritableArtifactOwners isAuthenticated "
        "getAuthenticationStatus deauthenticate loginAsComputeDevice "
        "loginWithPreAuthenticatedKeys installLocalPlugin getModelCatalog "
        "fuzzyFindStaffPicks lmLinkStatus lmLinkSetDisabled lmLinkUpdateDeviceName "
        "lmLinkSetPreferredDevice"
    ),
    "plugins": _names(
        "reindexPlugins processingHandleUpdate processingHandleRequest "
        "processingPullHistory processingGetOrLoadTokenSource processingHasStatus "
        "processingNeedsNaming processingSuggestName processingSetSenderName "
        "setConfigSchematics setGlobalConfigSchematics pluginInitCompleted reportError"
    ),
    "runtime": _names(
        "listEngines getEngineSelections selectEngine removeEngine surveyHardware "
        "searchRuntimeExtensions"
    ),
}
"""RPC endpoints per namespace."""

CHANNELS: dict[str, frozenset[str]] = {
    "llm": _names(_BASE_MODEL_CHANNELS, "predict completeRawText"),
    "embedding": _names(_BASE_MODEL_CHANNELS),
    "system": _names("alive"),
    "diagnostics": _names("streamLogs"),
    "files": _names("retrieve parseDocument"),
    "repository": _names(
        "downloadModel downloadArtifact pushArtifact ensureAuthenticated createDownloadPlan"
    ),
    "plugins": _names(
        "startToolUseSession generateWithGenerator registerDevelopmentPlugin "
        "setPromptPreprocessor setPredictionLoopHandler setToolsProvider setGenerator"
    ),
    "runtime": _names("downloadRuntimeExtension"),
}
"""Channel endpoints per namespace."""

NAMESPACES = tuple(RPCS)
"""Every websocket namespace an SDK opens."""

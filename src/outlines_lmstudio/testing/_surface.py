"""The endpoints LM Studio serves, per namespace (from the TypeScript SDK 2.0.0).

Extracted from ``@lmstudio/sdk`` 2.0.0 (``create*BackendInterface`` in ``dist/index.cjs``),
which is a superset of 1.5.0 and of the Python SDK 1.5.0. The emulator uses it to tell an
endpoint LM Studio has but the emulator does not serve (answered with an error, so no client
waits) from an endpoint LM Studio does not know (only a ``communicationWarning``, as LM Studio).
"""

from __future__ import annotations

__all__ = ["CHANNELS", "NAMESPACES", "RPCS"]

RPCS: dict[str, frozenset[str]] = {
    "llm": frozenset(
        {
            "applyPromptTemplate",
            "countTokens",
            "estimateModelUsage",
            "getBasePredictionConfig",
            "getInstanceProcessingState",
            "getLoadConfig",
            "getModelInfo",
            "listLoaded",
            "preloadDraftModel",
            "tokenize",
            "unloadModel",
        }
    ),
    "embedding": frozenset(
        {
            "countTokens",
            "embedString",
            "estimateModelUsage",
            "getBasePredictionConfig",
            "getInstanceProcessingState",
            "getLoadConfig",
            "getModelInfo",
            "listLoaded",
            "tokenize",
            "unloadModel",
        }
    ),
    "system": frozenset(
        {
            "getExperimentFlags",
            "info",
            "listDownloadedModelVariants",
            "listDownloadedModels",
            "notify",
            "requestShutdown",
            "setExperimentFlag",
            "startHttpServer",
            "stopHttpServer",
            "version",
        }
    ),
    "diagnostics": frozenset({}),
    "files": frozenset(
        {
            "getDocumentParsingLibrary",
            "getLocalFileAbsolutePath",
            "uploadFileBase64",
        }
    ),
    "repository": frozenset(
        {
            "deauthenticate",
            "fuzzyFindStaffPicks",
            "getAuthenticationStatus",
            "getLocalArtifactFiles",
            "getModelCatalog",
            "getModelDownloadOptions",
            "getWritableArtifactOwners",
            "installLocalPlugin",
            "installPluginDependencies",
            "isAuthenticated",
            "lmLinkSetDisabled",
            "lmLinkSetPreferredDevice",
            "lmLinkStatus",
            "lmLinkUpdateDeviceName",
            "loginAsComputeDevice",
            "loginWithPreAuthenticatedKeys",
            "searchModels",
        }
    ),
    "plugins": frozenset(
        {
            "pluginInitCompleted",
            "processingGetOrLoadTokenSource",
            "processingHandleRequest",
            "processingHandleUpdate",
            "processingHasStatus",
            "processingNeedsNaming",
            "processingPullHistory",
            "processingSetSenderName",
            "processingSuggestName",
            "reindexPlugins",
            "reportError",
            "setConfigSchematics",
            "setGlobalConfigSchematics",
        }
    ),
    "runtime": frozenset(
        {
            "getEngineSelections",
            "listEngines",
            "removeEngine",
            "searchRuntimeExtensions",
            "selectEngine",
            "surveyHardware",
        }
    ),
}
"""RPC endpoints per namespace."""

CHANNELS: dict[str, frozenset[str]] = {
    "llm": frozenset(
        {
            "completeRawText",
            "getOrLoad",
            "loadModel",
            "predict",
        }
    ),
    "embedding": frozenset(
        {
            "getOrLoad",
            "loadModel",
        }
    ),
    "system": frozenset(
        {
            "alive",
        }
    ),
    "diagnostics": frozenset(
        {
            "streamLogs",
        }
    ),
    "files": frozenset(
        {
            "parseDocument",
            "retrieve",
        }
    ),
    "repository": frozenset(
        {
            "createDownloadPlan",
            "downloadArtifact",
            "downloadModel",
            "ensureAuthenticated",
            "pushArtifact",
        }
    ),
    "plugins": frozenset(
        {
            "generateWithGenerator",
            "registerDevelopmentPlugin",
            "setGenerator",
            "setPredictionLoopHandler",
            "setPromptPreprocessor",
            "setToolsProvider",
            "startToolUseSession",
        }
    ),
    "runtime": frozenset(
        {
            "downloadRuntimeExtension",
        }
    ),
}
"""Channel endpoints per namespace."""

NAMESPACES = tuple(RPCS)
"""Every websocket namespace an SDK opens."""

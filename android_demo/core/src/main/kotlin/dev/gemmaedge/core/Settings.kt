package dev.gemmaedge.core

enum class BackendChoice { CPU, GPU }

/**
 * The engine's sampler settings as plain data: the fields of LiteRT-LM's
 * `SamplerConfig(topK: Int, topP: Double, temperature: Double, seed: Int)`, which the app
 * copies one to one. Validated here with the same rules as `SamplerConfig`'s `init`, so the
 * app never builds one that throws.
 */
data class SamplerPlan(val topK: Int, val topP: Double, val temperature: Double, val seed: Int)

/** Generation settings the app exposes; validated so the engine never sees nonsense. */
data class Settings(
    val backend: BackendChoice = BackendChoice.CPU,
    val maxNewTokens: Int = 256,
    val topK: Int = 1,
    val topP: Double = 1.0,
    val temperature: Double = 0.0,
    val seed: Int = 0,
    val chat: Boolean? = null, // null: chat format for IT packages, plain completion for PT
) {
    init {
        require(maxNewTokens in 1..8192) { "max new tokens must be in 1..8192 (got $maxNewTokens)" }
        require(topK >= 1) { "top-k must be at least 1 (got $topK)" }
        require(topP in 0.0..1.0) { "top-p must be in 0..1 (got $topP)" }
        require(temperature >= 0.0) { "temperature must be >= 0 (got $temperature)" }
    }

    /**
     * The sampler for `ConversationConfig(samplerConfig = ...)`. Temperature 0 means greedy:
     * top-k 1 whatever top-k says, so the reply is the same as `gemma-edge run` (greedy).
     */
    fun sampler(): SamplerPlan =
        if (temperature == 0.0) SamplerPlan(topK = 1, topP = 1.0, temperature = 0.0, seed = seed)
        else SamplerPlan(topK = topK, topP = topP, temperature = temperature, seed = seed)

    /** For `ConversationConfig(maxOutputToken = ...)`. */
    val maxOutputTokens: Int get() = maxNewTokens

    fun useChatTemplate(info: PackageInfo): Boolean = chat ?: info.isInstructionTuned

    /**
     * The prompt template to give the engine instead of the package's, or null to keep it.
     * The app always sends the user's raw text; LiteRT-LM's `Conversation` renders it with a
     * Jinja template: the one `gemma-edge package` writes into IT packages (the same format as
     * [ChatTemplate.format]), or, in PT packages that carry none, the engine's default for the
     * model type, which for `gemma3` is a chat template too. A PT model continues text, so
     * for it the app swaps in [ChatTemplate.COMPLETION_JINJA] (BOS + the text, no turns).
     */
    fun templateOverride(info: PackageInfo): String? =
        if (useChatTemplate(info)) null else ChatTemplate.COMPLETION_JINJA

    companion object {
        /** Settings from the app's text fields; throws IllegalArgumentException with a message the UI shows. */
        fun parse(backend: BackendChoice, maxNewTokens: String, topK: String, temperature: String): Settings {
            fun int(name: String, text: String) = text.trim().toIntOrNull()
                ?: throw IllegalArgumentException("$name must be a whole number (got '${text.trim()}')")
            val temp = temperature.trim().toDoubleOrNull()
                ?: throw IllegalArgumentException("temperature must be a number (got '${temperature.trim()}')")
            return Settings(backend = backend, maxNewTokens = int("max new tokens", maxNewTokens),
                            topK = int("top-k", topK), temperature = temp)
        }
    }
}

/** One-line messages for engine failures (LiteRT-LM throws `LiteRtLmJniException` with the native status text). */
object EngineFailure {
    fun explain(message: String?, backend: BackendChoice = BackendChoice.CPU): String {
        val m = message.orEmpty()
        val lower = m.lowercase()
        return when {
            "model file not found" in lower ->
                "the model file is missing on the device: push the whole package directory again"
            "opencl" in lower || (backend == BackendChoice.GPU && ("gpu" in lower || "delegate" in lower)) ->
                "the GPU backend is not available on this device: pick CPU and load again"
            "resource_exhausted" in lower || "out of memory" in lower || "failed to allocate" in lower ||
                "cannot allocate" in lower || Regex("\\boom\\b").containsMatchIn(lower) ->
                "not enough memory for this model: close other apps or use a smaller recipe (int4)"
            "failed to create model assets" in lower || ("invalid" in lower && "litertlm" in lower) ->
                "the model file is not a valid .litertlm: rebuild it with gemma-edge package"
            else -> "the engine failed: ${m.ifEmpty { "no message" }}"
        }
    }
}

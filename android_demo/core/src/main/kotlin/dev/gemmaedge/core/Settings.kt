package dev.gemmaedge.core

enum class BackendChoice { CPU, GPU }

/** Generation settings the app exposes; validated so the engine never sees nonsense. */
data class Settings(
    val backend: BackendChoice = BackendChoice.CPU,
    val maxNewTokens: Int = 256,
    val topK: Int = 1,
    val temperature: Double = 0.0,
    val chat: Boolean? = null, // null: use the chat template for IT packages only
) {
    init {
        require(maxNewTokens in 1..8192) { "maxNewTokens must be in 1..8192 (got $maxNewTokens)" }
        require(topK >= 1) { "topK must be at least 1 (got $topK)" }
        require(temperature >= 0.0) { "temperature must be >= 0 (got $temperature)" }
    }

    fun useChatTemplate(info: PackageInfo): Boolean = chat ?: info.isInstructionTuned

    /** The text handed to the engine for one user prompt. */
    fun promptFor(info: PackageInfo, userText: String): String =
        if (useChatTemplate(info)) ChatTemplate.format(listOf(Message("user", userText)), bos = "") else userText
}

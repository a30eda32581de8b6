package dev.gemmaedge.core

import java.io.File
import java.security.MessageDigest

/** What the app shows about a package: from its manifest.json, written by `gemma-edge package`. */
data class PackageInfo(
    val kind: String,
    val recipe: String?,
    val source: String?,
    val family: String?,
    val variant: String?,
    val modelFile: String,
    val bosTokenId: Long?,
    val stopTokens: Map<String, Long>,
    val files: Map<String, Pair<String, Long>>, // name -> (sha256, bytes)
) {
    val isInstructionTuned: Boolean get() = variant == "it"

    companion object {
        @Suppress("UNCHECKED_CAST")
        fun parse(json: String): PackageInfo {
            val root = Json.parse(json) as? Map<String, Any?> ?: throw IllegalArgumentException("manifest is not a JSON object")
            require(root["stage"] == "package") { "not a gemma-edge package manifest (stage ${root["stage"]})" }
            val inputs = root["inputs"] as? Map<String, Any?> ?: emptyMap()
            val tokens = root["tokens"] as? Map<String, Any?> ?: emptyMap()
            val files = (root["files"] as Map<String, Map<String, Any?>>).mapValues { (_, v) ->
                (v["sha256"] as String) to (v["bytes"] as Long)
            }
            return PackageInfo(
                kind = root["package"] as String,
                recipe = root["recipe"] as String?,
                source = inputs["source"] as String?,
                family = inputs["family"] as String?,
                variant = inputs["variant"] as String?,
                modelFile = root["model_file"] as String,
                bosTokenId = tokens["bos_token_id"] as Long?,
                stopTokens = (tokens["stop_tokens"] as? Map<String, Long>) ?: emptyMap(),
                files = files,
            )
        }
    }
}

sealed class Verification {
    object Ok : Verification() { override fun toString() = "ok" }
    data class Missing(val file: String) : Verification() { override fun toString() = "missing:$file" }
    data class Mismatch(val file: String) : Verification() { override fun toString() = "mismatch:$file" }
}

/** Re-hashes every file the manifest lists before the engine may load the model. */
object ManifestVerifier {
    fun sha256(file: File): String {
        val digest = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val buffer = ByteArray(1 shl 20)
            while (true) {
                val n = input.read(buffer)
                if (n < 0) break
                digest.update(buffer, 0, n)
            }
        }
        return digest.digest().joinToString("") { "%02x".format(it) }
    }

    fun verify(dir: File, info: PackageInfo): Verification {
        for ((name, expected) in info.files.toSortedMap()) {
            val file = File(dir, name)
            if (!file.isFile) return Verification.Missing(name)
            if (file.length() != expected.second || sha256(file) != expected.first) return Verification.Mismatch(name)
        }
        return Verification.Ok
    }

    /** The message the app shows for a failed verification: what is wrong and what to do. */
    fun explain(result: Verification): String = when (result) {
        is Verification.Ok -> "package verified"
        is Verification.Missing -> "${result.file} is missing from the package: push the whole package directory again"
        is Verification.Mismatch -> "${result.file} does not match its manifest (damaged or modified): rebuild it with gemma-edge package and push it again"
    }
}

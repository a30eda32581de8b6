package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File
import java.nio.file.Files

class ManifestVerifierTest {
    @Suppress("UNCHECKED_CAST")
    private fun writeCase(manifestJson: String, files: Map<String, String>): File {
        val dir = Files.createTempDirectory("pkg").toFile()
        File(dir, "manifest.json").writeText(manifestJson)
        for ((name, text) in files) File(dir, name).writeText(text)
        return dir
    }

    @Suppress("UNCHECKED_CAST")
    @Test
    fun sharedVectors() {
        val data = Vectors.load("manifest.json")
        val manifestJson = File(System.getProperty("gemmaedge.vectors") ?: "../test_vectors", "manifest.json")
            .readText().let { text -> extractManifest(text) }
        val info = PackageInfo.parse(manifestJson)
        assertEquals("litertlm", info.kind)
        assertEquals(mapOf("<eos>" to 1L, "<end_of_turn>" to 106L), info.stopTokens)
        for (case in data["cases"] as List<Map<String, Any?>>) {
            val dir = writeCase(manifestJson, case["files"] as Map<String, String>)
            assertEquals(case["name"] as String, case["expected"], ManifestVerifier.verify(dir, info).toString())
            dir.deleteRecursively()
        }
    }

    @Test
    fun explanationsNameTheFileAndTheFix() {
        val text = ManifestVerifier.explain(Verification.Mismatch("model.litertlm"))
        assertTrue(text.contains("model.litertlm") && text.contains("gemma-edge package"))
    }

    @Test
    fun notAPackageIsRefused() {
        assertThrows(IllegalArgumentException::class.java) { PackageInfo.parse("{\"stage\": \"export\"}") }
        assertThrows(IllegalArgumentException::class.java) { PackageInfo.parse("[1, 2") }
    }

    /** The vector file nests the manifest; re-serialising is not needed: take its JSON text. */
    private fun extractManifest(vectorText: String): String {
        val start = vectorText.indexOf("\"manifest\"")
        var i = vectorText.indexOf('{', start)
        var depth = 0
        val from = i
        while (true) {
            when (vectorText[i]) { '{' -> depth++; '}' -> { depth--; if (depth == 0) return vectorText.substring(from, i + 1) } }
            i++
        }
    }
}

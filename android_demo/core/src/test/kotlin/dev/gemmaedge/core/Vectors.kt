package dev.gemmaedge.core

import java.io.File

/** The shared test vectors (android_demo/test_vectors), read by the Python tests too. */
object Vectors {
    private val dir: File = File(System.getProperty("gemmaedge.vectors") ?: "../test_vectors")

    @Suppress("UNCHECKED_CAST")
    fun load(name: String): Map<String, Any?> = Json.parse(File(dir, name).readText()) as Map<String, Any?>
}
